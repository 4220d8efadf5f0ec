"""The Predictor inside Lightning's predict loop, so that prediction runs on the engine training runs on: one
process or many (DDP on CPUs, GPUs and nodes), each with its share of the photos."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch.nn as nn

from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor

ON_ERROR = ("skip", "stop")


class PredictionModule(pl.LightningModule):
    """Masks for batches of PhotoDataset items: {"done": [(index, path, image, mask)], "failed": [(index, path,
    reason)]}. With `on_error="stop"` a photo that cannot be read stops the run (its error names it)."""

    def __init__(self, predictor: Predictor, on_error: str = "skip"):
        super().__init__()
        if on_error not in ON_ERROR:
            raise CarsegError(f"--on-error {on_error}: use skip or stop")
        self.predictor, self.on_error = predictor, on_error
        # registered, so that Lightning moves the models to this process's device
        self.models = nn.ModuleList([m for m, _ in predictor.members if m is not None])

    def on_predict_start(self) -> None:
        self.predictor.device = self.device

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, list]:
        failed = [(item["index"], item["path"], item["error"]) for item in batch if item["error"] is not None]
        if failed and self.on_error == "stop":
            raise CarsegError(f"{failed[0][2]} (--on-error skip records such photos and goes on)")
        done: list[tuple] = []
        good = [item for item in batch if item["error"] is None]
        while good:  # photos of one size are predicted together
            shape = good[0]["image"].shape
            same = [item for item in good if item["image"].shape == shape]
            good = [item for item in good if item["image"].shape != shape]
            masks = self.predictor.masks([item["image"] for item in same])
            done += [(item["index"], item["path"], item["image"], m) for item, m in zip(same, masks, strict=True)]
        return {"done": sorted(done, key=lambda d: d[0]), "failed": failed}
