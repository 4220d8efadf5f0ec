"""What the benchmarks share: models built from their configs, an untrained checkpoint, loader speed, peak memory
(resident, and on a GPU), the device they run on."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from carseg.build import build
from carseg.config import model_config
from carseg.errors import CarsegError
from carseg.models.checkpoint import save_checkpoint
from carseg.models.module import SegmentationModule


def build_module(model: str, overrides: Sequence[str] = ()) -> SegmentationModule:
    """The SegmentationModule of `model=<model>` (conf/model), built as training builds it."""
    return build(model_config(model, overrides), "model", _recursive_=False)


def random_checkpoint(path: Path, model: str = "unet_resnet34", image_size: list[int] | None = None) -> Path:
    """A checkpoint of an untrained `model=<model>` (for speed figures when no trained one is given), recorded
    as trained at `image_size` (None: it runs at each photo's own size)."""
    torch.manual_seed(0)
    return save_checkpoint(build_module(model), path, image_size=image_size)


def loader_rate(dataset: Dataset, workers: int, batch_size: int = 8) -> float:
    """Images per second through a DataLoader (first batch excluded: worker start-up)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for batch in it:
        n += batch["image"].shape[0]
    return n / max(time.perf_counter() - start, 1e-9)


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


def check_device(device: str, command: str) -> str:
    """The name of `device` (cpu, or the GPU's name for cuda); one clear error where cuda is asked for and
    no CUDA device is visible."""
    if device != "cuda":
        return "cpu"
    if not torch.cuda.is_available():
        raise CarsegError(f"{command} --device cuda: no CUDA device is visible; run it on a GPU machine")
    return torch.cuda.get_device_name()


def reset_gpu_peak() -> None:
    """Start a new peak of GPU memory (free cached blocks first, so each measurement starts alike)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def gpu_peak_mib() -> int:
    """The peak of allocated GPU memory since `reset_gpu_peak`, MiB."""
    return round(torch.cuda.max_memory_allocated() / 2**20)
