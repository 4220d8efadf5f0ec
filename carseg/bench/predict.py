"""Prediction at scale: full-size photos per second through `carseg predict` (a Kaggle submission) with 1, 2, ...
processes, and what that means for Kaggle's 100,064 test photos."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from carseg import console
from carseg.bench.measure import random_checkpoint
from carseg.bench.report import show, write
from carseg.data.io import image_size, read_image
from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor

KAGGLE_TEST_PHOTOS = 100_064


def linked(files: Sequence[Path], folder: Path) -> Path:
    """A new folder of links to `files`."""
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def _timed(photos: Path, ckpt: Path, processes: int, accelerator: str, submission: Path) -> float:
    """Wall seconds of `carseg predict --submission` over a folder of photos."""
    command = [sys.executable, "-m", "carseg.cli", "predict", str(photos), "--ckpt", str(ckpt), "--quiet"]
    command += ["--submission", str(submission), "--devices", str(processes), "--accelerator", accelerator]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise CarsegError(f"`carseg predict` with {processes} process(es) failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


BATCH = 4  # carseg predict's batch


def model_rate(ckpt: Path, files: Sequence[Path], device: str) -> float:
    """Photos/s of the model alone in one process, as `carseg predict` runs it (its default Predictor, batch
    BATCH), on photos decoded beforehand: the rate the whole command is measured against."""
    import torch

    predictor = Predictor(ckpt=ckpt, device=device)
    images = [read_image(f) for f in files]
    batches = [images[i : i + BATCH] for i in range(0, len(images), BATCH)]
    predictor.masks(batches[0])  # warm-up (and compilation on a GPU)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        predictor.masks(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def run(
    data_dir: str | Path,
    ckpt: str | Path | None = None,
    images: int = 64,
    processes: Sequence[int] = (1, 2),
    accelerator: str = "cpu",
    out: str | Path = "bench/predict.json",
    model: str | None = None,
) -> dict[str, Any]:
    """Time `carseg predict --submission` on `images` photos of `data_dir` for each process count."""
    files = sorted(Path(data_dir, "train").glob("*.jpg")) or sorted(Path(data_dir).glob("*.jpg"))
    files = files[:images]
    if not files:
        raise CarsegError(f"{data_dir}: no JPEG photos (in it or its train/ folder)")
    tmp = Path(tempfile.mkdtemp(prefix="carseg-bench-predict-"))
    photos = linked(files, tmp / "photos")
    # untrained: the default recipe's model, seeing photos at its training size (carvana_cpu: light U-Net, 320x480)
    if ckpt:
        ckpt = Path(ckpt)
    elif model:  # untrained, at each photo's own size
        ckpt = random_checkpoint(tmp / f"{model}.ckpt", model)
    else:
        ckpt = random_checkpoint(tmp / "model.ckpt", "unet_resnet18_light", [320, 480])
    rows = []
    few_files = files[: max(1, len(files) // 4)]
    few = linked(few_files, tmp / "few")
    for n in processes:
        seconds = _timed(photos, ckpt, n, accelerator, tmp / f"submission_{n}.csv")
        start_up = _timed(few, ckpt, n, accelerator, tmp / f"few_{n}.csv")
        # photos/s once running: the extra photos over the extra time (start-up and model loading cancel out)
        rate = (len(files) - len(few_files)) / max(seconds - start_up, 1e-9)
        rows.append(
            {
                "processes": n,
                "photos": len(files),
                "wall s": round(seconds, 1),
                "img/s (wall)": round(len(files) / seconds, 2),
                "img/s (running)": round(rate, 2),
                "speed-up": None,
                "hours for 100,064 photos": round(KAGGLE_TEST_PHOTOS / rate / 3600, 2),
            }
        )
    model_only = model_rate(ckpt, files[: max(8, len(files) // 4)], "cuda" if accelerator == "gpu" else "cpu")
    for row in rows:
        row["speed-up"] = round(row["img/s (running)"] / rows[0]["img/s (running)"], 2)
        row["end-to-end / model-only"] = round(row["img/s (running)"] / (model_only * row["processes"]), 3)
    h, w = image_size(files[0])
    show(f"`carseg predict --submission`, {len(files)} photos of {w}x{h}, {accelerator} ({ckpt.name})", rows)
    console.info(f"model alone (photos decoded beforehand, batch {BATCH}): {model_only:.2f} img/s per process")
    payload = {
        "data_dir": str(data_dir),
        "image_size": [h, w],
        "checkpoint": str(ckpt),
        "accelerator": accelerator,
        "model_only_img_s": round(model_only, 2),
        "runs": rows,
    }
    write(out, payload)
    shutil.rmtree(tmp, ignore_errors=True)
    return payload
