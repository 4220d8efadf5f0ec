"""Training speed: carseg's Trainer path against a bare PyTorch loop, same model, batch, loss and optimiser."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from carseg.bench.measure import build_module, loader_rate, peak_rss_mb
from carseg.bench.report import show, write
from carseg.build import build
from carseg.config import model_config
from carseg.data.carvana import scan
from carseg.data.datamodule import CarvanaDataset
from carseg.models.module import IMAGENET_MEAN, IMAGENET_STD

SETTINGS = {  # name: (channels_last, bf16)
    "fp32": (False, False),
    "channels_last": (True, False),
    "channels_last+bf16": (True, True),
}


class _Batches(Dataset):
    """The same few random batches, as uint8 images and 0/1 masks, so both paths see identical data."""

    def __init__(self, size: tuple[int, int], n: int):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 255, (n, 3, *size), dtype=torch.uint8, generator=g)
        self.masks = (torch.rand(n, 1, *size, generator=g) > 0.5).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


@dataclass(frozen=True)
class Case:
    """One measurement: model (a conf/model name), input size, batch, timed steps after warm-up, memory
    format, precision."""

    model: str
    size: tuple[int, int]
    batch: int
    steps: int
    warmup: int
    channels_last: bool
    bf16: bool


# A tiny run that checks the benchmark works (CI), not a measurement.
SMOKE: dict[str, Any] = {
    "models": ("unet_resnet18_light",),
    "sizes": {"unet_resnet18_light": (64, 96)},
    "batch": 2,
    "steps": 1,
    "warmup": 1,
    "rss": False,
}


def bare_loop(case: Case) -> float:
    """Images/s of the loop a user writes by hand: normalise, forward, loss, backward, optimiser step, with
    the network, loss and optimiser of the model's config (the reference carseg's path is measured against)."""
    torch.manual_seed(0)
    size, batch, steps, warmup, channels_last, bf16 = (
        case.size,
        case.batch,
        case.steps,
        case.warmup,
        case.channels_last,
        case.bf16,
    )
    cfg = model_config(case.model)
    net = build(cfg.net, "model.net")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    opt = instantiate(cfg.optimizer, params=net.parameters())
    loss_fn = build(cfg.loss, "model.loss")
    data = _Batches(size, batch)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    x_u8, y = data.images, data.masks
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        x = (x_u8.float() - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.end = time.perf_counter()
        self.steps = trainer.global_step - self.warmup


def carseg_loop(case: Case) -> float:
    """Images/s of carseg's path: SegmentationModule (metrics, logging, scheduler) in a Lightning Trainer."""
    torch.manual_seed(0)
    channels_last, bf16, warmup, steps, batch = case.channels_last, case.bf16, case.warmup, case.steps, case.batch
    module = build_module(case.model, [f"model.channels_last={str(channels_last).lower()}"])
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = DataLoader(_Batches(case.size, batch), batch_size=batch, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    return timer.steps * batch / (timer.end - timer.start)


def loader_rows(data_dir: Path, sizes: dict[str, tuple[int, int]], rows: list[dict[str, Any]]) -> list[dict]:
    """Images/s of one loader worker (reduced decode, RLE masks) at each training size, and what a fast
    GPU would need: workers for 1,000 images/s."""
    records = scan(data_dir, "auto")[:48]
    out = []
    for model, size in sizes.items():
        per_worker = loader_rate(CarvanaDataset(records, size), workers=0)
        step = max((r["carseg img/s"] for r in rows if r["model"] == model), default=None)
        out.append(
            {
                "size": f"{size[0]}x{size[1]}",
                "loader img/s per worker": round(per_worker, 1),
                f"{model} step img/s (fastest setting)": step,
                "workers for a 1,000 img/s GPU": math.ceil(1000 / per_worker),
            }
        )
    return out


def run(
    models: tuple[str, ...] = ("unet_resnet34", "unet_resnet18_light"),
    sizes: dict[str, tuple[int, int]] | None = None,
    batch: int = 8,
    steps: int = 4,
    warmup: int = 2,
    rss: bool = True,
    out: str | Path = "bench/train.json",
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure both paths for every model and setting in this process, one after the other."""
    sizes = sizes or {"unet_resnet34": (320, 480), "unet_resnet18_light": (160, 240)}
    rows = []
    for model in models:
        size = sizes[model]
        for setting, (channels_last, bf16) in SETTINGS.items():
            case = Case(model, size, batch, steps, warmup, channels_last, bf16)
            bare = bare_loop(case)
            ours = carseg_loop(case)
            rows.append(
                {
                    "model": model,
                    "size": f"{size[0]}x{size[1]}",
                    "setting": setting,
                    "batch": batch,
                    "bare img/s": round(bare, 2),
                    "carseg img/s": round(ours, 2),
                    "carseg/bare": round(ours / bare, 3),
                }
            )
    show(f"Training speed, carseg vs a bare PyTorch loop ({steps} timed steps after {warmup})", rows)
    payload: dict[str, Any] = {"train": rows}
    if data_dir is not None and Path(data_dir, "train").is_dir():
        payload["loader"] = loader_rows(Path(data_dir), sizes, rows)
        show(f"Input pipeline per worker ({data_dir}), next to the training step", payload["loader"])
    if rss:
        payload["peak_rss_mb"] = {
            "train (default run, 2 epochs of 4 batches)": round(
                peak_rss_mb(
                    [
                        sys.executable,
                        "-m",
                        "carseg.entrypoints.train",
                        "trainer.max_epochs=2",
                        "trainer.limit_train_batches=4",
                        "logger=csv",
                        "print_config=false",
                        "hydra.run.dir=bench/rss_train_run",
                    ]
                ),
                1,
            )
        }
        show("Peak memory", [{"what": k, "MB": v} for k, v in payload["peak_rss_mb"].items()])
    write(out, payload)
    return payload
