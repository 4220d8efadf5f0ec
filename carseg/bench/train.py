"""Training speed: carseg's Trainer path against a bare PyTorch loop, same model, batch, loss and optimiser."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from carseg.bench.report import show, write
from carseg.models.factory import create_model
from carseg.models.losses import CombinedLoss
from carseg.models.module import IMAGENET_MEAN, IMAGENET_STD, SegmentationModule

MODELS: dict[str, dict[str, Any]] = {
    "unet_resnet34": {"arch": "Unet", "encoder_name": "resnet34"},
    "unet_resnet18_light": {"arch": "Unet", "encoder_name": "resnet18", "decoder_channels": [128, 64, 32, 16, 16]},
}
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
    """One measurement: model, input size, batch, timed steps after warm-up, memory format, precision."""

    net_kwargs: dict[str, Any]
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
    """Images/s of the loop a user writes by hand: normalise, forward, BCE+Dice, backward, AdamW step."""
    torch.manual_seed(0)
    size, batch, steps, warmup, channels_last, bf16 = (
        case.size,
        case.batch,
        case.steps,
        case.warmup,
        case.channels_last,
        case.bf16,
    )
    net = create_model(**case.net_kwargs)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = CombinedLoss()
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
    module = SegmentationModule(
        net={"_target_": "carseg.models.factory.create_model", **case.net_kwargs},
        loss={"_target_": "carseg.models.losses.CombinedLoss"},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 1e-4},
        scheduler={"_target_": "carseg.models.schedules.warmup_cosine", "interval": "step"},
        channels_last=channels_last,
    )
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


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory (MB) of the process running `command` (its VmHWM, polled until it exits).

    Not `getrusage(RUSAGE_CHILDREN)`: a child forked from a large benchmark process counts the parent's
    pages until it execs."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status, peak_kb = Path(f"/proc/{proc.pid}/status"), 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return peak_kb / 1024


def loader_rows(data_dir: Path, sizes: dict[str, tuple[int, int]], rows: list[dict[str, Any]]) -> list[dict]:
    """Images/s of one loader worker (reduced decode, RLE masks) at each training size, and what a fast
    GPU would need: workers for 1,000 images/s."""
    import math

    from carseg.bench.data import loader_rate
    from carseg.data.carvana import scan
    from carseg.data.datamodule import CarvanaDataset

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
            case = Case(MODELS[model], size, batch, steps, warmup, channels_last, bf16)
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
                        "train.py",
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
