"""Training speed: carseg's Trainer path against a bare PyTorch loop, same model, batch, loss and optimiser."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from carseg import runs
from carseg.bench.measure import build_module, check_device, gpu_peak_mib, loader_rate, peak_rss_mb, reset_gpu_peak
from carseg.bench.report import show, write
from carseg.build import build
from carseg.config import compose_config, config_choices, model_config
from carseg.data.carvana import scan
from carseg.data.datamodule import CarvanaDataset
from carseg.errors import CarsegError
from carseg.models.module import IMAGENET_MEAN, IMAGENET_STD

SETTINGS = {  # name: (channels_last, bf16)
    "fp32": (False, False),
    "channels_last": (True, False),
    "channels_last+bf16": (True, True),
}


class _Batches(Dataset):
    """The same random batch, as uint8 images and 0/1 masks, `n` times: both paths see identical data, already
    collated (and pinned for a GPU), so that what is timed is the training step, not batch assembly."""

    def __init__(self, size: tuple[int, int], batch: int, n: int, pin: bool = False):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 255, (batch, 3, *size), dtype=torch.uint8, generator=g)
        self.masks = (torch.rand(batch, 1, *size, generator=g) > 0.5).float()
        if pin:
            self.images, self.masks = self.images.pin_memory(), self.masks.pin_memory()
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images, "mask": self.masks}


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
    device: str = "cpu"


# (model, size, batch) of each measurement, per device: on a GPU also Carvana's full size (1918x1280, padded)
CASES: dict[str, list[tuple[str, tuple[int, int], int]]] = {
    "cpu": [("unet_resnet34", (320, 480), 8), ("unet_resnet18_light", (160, 240), 8)],
    "cuda": [("unet_resnet34", (320, 480), 16), ("unet_resnet34", (1280, 1920), 4)],
}
# A tiny run that checks the benchmark works (CI), not a measurement.
SMOKE: dict[str, Any] = {
    "cases": [("unet_resnet18_light", (64, 96), 2)],
    "steps": 1,
    "warmup": 1,
    "rss": False,
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_loop(case: Case) -> float:
    """Images/s of the loop a user writes by hand: normalise, forward, loss, backward, optimiser step, with
    the network, loss and optimiser of the model's config (the reference carseg's path is measured against)."""
    torch.manual_seed(0)
    size, batch, steps, warmup, channels_last, bf16, device = (
        case.size,
        case.batch,
        case.steps,
        case.warmup,
        case.channels_last,
        case.bf16,
        case.device,
    )
    cfg = model_config(case.model)
    torch.backends.cudnn.benchmark = device == "cuda"  # as carseg's Trainer sets it on a GPU
    net = build(cfg.net, "model.net").to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    opt = instantiate(cfg.optimizer, params=net.parameters())
    loss_fn = build(cfg.loss, "model.loss")
    data = _Batches(size, batch, 1, pin=device == "cuda")
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    x_u8, y_cpu = data.images, data.masks
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        # each step moves its batch to the device, as a loader's batches are
        x = (x_u8.to(device, non_blocking=True).float() - mean) / std
        y = y_cpu.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.start, self.end, self.steps = warmup, device, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            _sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= trainer.max_steps:
            _sync(self.device)
        self.end = time.perf_counter()
        self.steps = trainer.global_step - self.warmup


def carseg_loop(case: Case) -> float:
    """Images/s of carseg's path: SegmentationModule (metrics, logging, scheduler) in a Lightning Trainer."""
    torch.manual_seed(0)
    channels_last, bf16, warmup, steps, batch = case.channels_last, case.bf16, case.warmup, case.steps, case.batch
    module = build_module(case.model, [f"model.channels_last={str(channels_last).lower()}"])
    timer = _StepTimer(warmup, case.device)
    trainer = pl.Trainer(
        accelerator="gpu" if case.device == "cuda" else "cpu",
        benchmark=case.device == "cuda" or None,
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
    batches = _Batches(case.size, batch, warmup + steps, pin=case.device == "cuda")
    loader = DataLoader(batches, batch_size=None, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    return timer.steps * batch / (timer.end - timer.start)


def loader_rows(
    data_dir: Path, cases: list[tuple[str, tuple[int, int], int]], rows: list[dict[str, Any]]
) -> list[dict]:
    """Images/s of one loader worker (reduced decode, RLE masks) at each training size, and what a fast
    GPU would need: workers for 1,000 images/s."""
    records = scan(data_dir, "auto")[:48]
    out = []
    for model, size, _ in cases:
        per_worker = loader_rate(CarvanaDataset(records, size), workers=0)
        name = f"{size[0]}x{size[1]}"
        step = max((r["carseg img/s"] for r in rows if r["model"] == model and r["size"] == name), default=None)
        out.append(
            {
                "size": name,
                "loader img/s per worker": round(per_worker, 1),
                f"{model} step img/s (fastest setting)": step,
                "workers for a 1,000 img/s GPU": math.ceil(1000 / per_worker),
            }
        )
    return out


def end_to_end(experiment: str = "carvana_cpu", overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe's real first epoch (loader workers decoding and augmenting, validation, checkpoint writes),
    run as `train.py experiment=<experiment> trainer.max_epochs=1 refiner=none`, in training img/s, beside the
    bare loop's step rate for the same model (the experiment's), size, batch and precision, measured right
    after."""
    cfg = compose_config("train", [f"experiment={experiment}", *(overrides or [])])
    model = config_choices("train", [f"experiment={experiment}", *(overrides or [])])["model"]
    dm = cfg.datamodule
    size = tuple(dm.size_schedule[0]["size"]) if dm.get("size_schedule") else tuple(dm.image_size)
    batch, bf16 = int(dm.batch_size), str(cfg.trainer.precision).startswith("bf16")
    with tempfile.TemporaryDirectory(prefix="carseg-bench-e2e-") as tmp:
        command = [sys.executable, "-m", "carseg.entrypoints.train", f"experiment={experiment}", *(overrides or [])]
        command += ["trainer.max_epochs=1", "refiner=none", "logger=csv", "print_config=false", f"hydra.run.dir={tmp}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise CarsegError(f"bench train --e2e: the training run failed:\n{done.stderr[-2000:]}")
        (epoch,) = runs.read_summary(tmp)["epoch_times"][:1]
    bare = bare_loop(Case(model, size, batch, 4, 2, bool(cfg.model.get("channels_last", True)), bf16))
    return {
        "experiment": experiment,
        "model": model,
        "size": f"{size[0]}x{size[1]}",
        "batch": batch,
        "epoch images": epoch["images"],
        "epoch seconds": epoch["seconds"],
        "real epoch img/s": epoch["img/s"],
        "bare step img/s": round(bare, 2),
        "real/bare": round(epoch["img/s"] / bare, 3),
    }


def run(
    cases: list[tuple[str, tuple[int, int], int]] | None = None,
    steps: int = 4,
    warmup: int = 2,
    rss: bool = True,
    out: str | Path = "bench/train.json",
    data_dir: str | Path | None = None,
    device: str = "cpu",
    e2e: str | None = None,
) -> dict[str, Any]:
    """Measure both paths for every (model, size, batch) case and setting in this process, one after the
    other, on `device` (cpu or cuda; on cuda also the peak GPU memory of each); with `e2e` (an experiment), also
    that recipe's real epoch beside the bare step (`end_to_end`)."""
    where = check_device(device, "bench train")
    cases = [(m, tuple(s), b) for m, s, b in (cases or CASES[device])]
    rows = []
    for model, size, batch in cases:
        for setting, (channels_last, bf16) in SETTINGS.items():
            case = Case(model, size, batch, steps, warmup, channels_last, bf16, device)
            row: dict[str, Any] = {"model": model, "size": f"{size[0]}x{size[1]}", "setting": setting, "batch": batch}
            for name, loop in (("bare", bare_loop), ("carseg", carseg_loop)):
                if device == "cuda":
                    reset_gpu_peak()
                row[f"{name} img/s"] = round(loop(case), 2)
                if device == "cuda":
                    row[f"{name} peak GPU MiB"] = gpu_peak_mib()
            row["carseg/bare"] = round(row["carseg img/s"] / row["bare img/s"], 3)
            rows.append(row)
    show(
        f"Training speed on {where}, carseg vs a bare PyTorch loop ({steps} timed steps after {warmup})",
        rows,
    )
    payload: dict[str, Any] = {"device": where, "torch": torch.__version__, "train": rows}
    if data_dir is not None and Path(data_dir, "train").is_dir():
        payload["loader"] = loader_rows(Path(data_dir), cases, rows)
        show(f"Input pipeline per worker ({data_dir}), next to the training step", payload["loader"])
    if e2e:
        payload["end_to_end"] = end_to_end(e2e)
        show(
            "A real epoch of the recipe (loader, validation, checkpoints) beside the bare step", [payload["end_to_end"]]
        )
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
