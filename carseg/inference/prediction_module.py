"""The Predictor inside Lightning's predict loop, so that prediction runs on the engine training runs on: one
process or many (DDP on CPUs, GPUs and nodes), each with its share of the photos."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch.nn as nn

from carseg.errors import CarsegError
from carseg.inference.photos import decode_jpegs
from carseg.inference.predictor import Predictor

ON_ERROR = ("skip", "stop")


class PredictionModule(pl.LightningModule):
    """Masks for batches of PhotoDataset items: {"done": [(item, mask, alpha, quality or None)], "failed":
    [(index, path, reason)]}. With `on_error="stop"` a photo that cannot be read stops the run (its error names it)."""

    def __init__(self, predictor: Predictor, on_error: str = "skip", decode_here: bool = False, assess: bool = False):
        super().__init__()
        self.assess = assess  # each done photo also carries its quality (a sixth element)
        self.decode_here = decode_here  # JPEGs arrive as bytes and are decoded on this process's device
        if on_error not in ON_ERROR:
            raise CarsegError(f"--on-error {on_error}: use skip or stop")
        self.predictor, self.on_error = predictor, on_error
        # registered, so that Lightning moves the models to this process's device
        self.models = nn.ModuleList([m for m, _ in predictor.members if m is not None])
        refiner = predictor.refiner[0] if predictor.refiner is not None else None
        self.refiner = refiner if isinstance(refiner, nn.Module) else None  # an ONNX refiner has no device

    def on_predict_start(self) -> None:
        self.predictor.device = self.device

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, list]:
        if self.decode_here:
            decode_jpegs(batch, self.device)
        failed = [(item["index"], item["path"], item["error"]) for item in batch if item["error"] is not None]
        if failed and self.on_error == "stop":
            raise CarsegError(f"{failed[0][2]} (--on-error skip records such photos and goes on)")
        good = [(item, item["image"]) for item in batch if item["error"] is None]
        batched = self.predictor.batched_assess if self.assess else self.predictor.batched_mattes
        mattes = batched(good, batch_size=max(1, len(good)))  # photos of one size go together
        done = [(item, *result, None)[:4] for item, result in mattes]
        return {"done": done, "failed": failed}
