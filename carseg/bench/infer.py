"""Full-resolution inference speed of `carseg predict`'s paths, each checked against eager fp32."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from carseg import console
from carseg.bench.measure import check_device, gpu_peak_mib, peak_rss_mb, random_checkpoint, reset_gpu_peak
from carseg.bench.report import show, write
from carseg.data.io import read_image
from carseg.inference.export import export_onnx
from carseg.inference.predictor import Predictor

AGREEMENT_TO_COUNT = 0.999


def forward_gflops(predictor: Predictor, shape: tuple[int, int]) -> float:
    """Counted GFLOP of one forward pass at `shape` (padded as the model pads)."""
    x = torch.zeros(1, 3, *shape, device=predictor.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        predictor.module(x)
    return counter.get_total_flops() / 1e9


def time_path(predictor: Predictor, images: list[np.ndarray], warmup: int = 1) -> tuple[float, np.ndarray]:
    """Seconds per image (batch 1) and the masks."""
    for image in images[:warmup]:
        predictor.masks([image])
    start = time.perf_counter()
    masks = np.stack([predictor.masks([image])[0] for image in images])
    return (time.perf_counter() - start) / len(images), masks


def run(
    data_dir: str | Path,
    ckpt: str | Path | None = None,
    images: int = 3,
    compile_: bool = True,
    rss: bool = True,
    out: str | Path = "bench/infer.json",
    device: str = "cpu",
) -> dict[str, Any]:
    """Time eager fp32, channels_last, bf16, torch.compile and ONNX Runtime at the images' own size on `device`
    (cpu or cuda; on cuda torch.compile runs in bf16, and ONNX Runtime with the CUDA provider where present)."""
    cuda, where = device == "cuda", check_device(device, "bench infer")
    files = sorted(Path(data_dir, "train").glob("*.jpg"))[:images] or sorted(Path(data_dir).glob("*.jpg"))[:images]
    pictures = [read_image(f) for f in files]
    shape = pictures[0].shape[:2]
    tmp = Path(tempfile.mkdtemp(prefix="carseg-bench-infer-"))
    ckpt = Path(ckpt) if ckpt else random_checkpoint(tmp / "unet_resnet34.ckpt", "unet_resnet34")
    onnx_path = export_onnx(ckpt, tmp / "model.onnx")
    paths: dict[str, dict[str, Any]] = {
        "eager fp32": {"ckpt": ckpt, "precision": "32", "channels_last": False},
        "channels_last fp32": {"ckpt": ckpt, "precision": "32", "channels_last": True},
        "channels_last + bf16 autocast": {"ckpt": ckpt, "precision": "bf16", "channels_last": True},
    }
    if compile_:
        precision = "bf16" if cuda else "32"
        label = "bf16" if cuda else "fp32"
        paths[f"torch.compile {label} (channels_last)"] = {"ckpt": ckpt, "precision": precision, "compile": True}
    providers = ort.get_available_providers()
    provider = "CUDAExecutionProvider" if cuda and "CUDAExecutionProvider" in providers else "CPUExecutionProvider"
    paths[f"ONNX Runtime fp32 ({provider})"] = {"onnx": onnx_path, "threads": torch.get_num_threads()}
    reference = None
    gflop = None
    rows = []
    for name, kwargs in paths.items():
        # native size: the full-resolution path
        predictor = Predictor(input_size=None, device=device, **kwargs)
        if cuda:
            reset_gpu_peak()
        if gflop is None:
            gflop = forward_gflops(predictor, shape)
        seconds, masks = time_path(predictor, pictures, warmup=2 if kwargs.get("compile") else 1)
        if reference is None:
            reference = masks
        agreement = float((masks == reference).mean())
        row = {
            "path": name,
            "s/img": round(seconds, 3),
            "img/s": round(1 / seconds, 3),
            "GFLOP/s": round(gflop / seconds, 1),
            "mask agreement": round(agreement, 5),
            "counts": agreement >= AGREEMENT_TO_COUNT,
        }
        if cuda:
            row["peak GPU MiB"] = gpu_peak_mib()
        rows.append(row)
    fastest = min((r for r in rows if r["counts"]), key=lambda r: r["s/img"])
    show(f"Full-resolution inference on {where}, {shape[1]}x{shape[0]}, batch 1, {gflop:.0f} GFLOP/forward", rows)
    console.info(f"fastest path that agrees with fp32 on >= {AGREEMENT_TO_COUNT:.1%} of pixels: {fastest['path']}")
    payload: dict[str, Any] = {
        "device": where,
        "torch": torch.__version__,
        "image_size": list(shape),
        "checkpoint": str(ckpt),
        "gflop_per_forward": gflop,
        "paths": rows,
        "fastest_agreeing": fastest["path"],
    }
    if rss:
        payload["peak_rss_mb"] = {
            "carseg predict, full resolution": round(
                peak_rss_mb(
                    [
                        sys.executable,
                        "-m",
                        "carseg.cli",
                        "predict",
                        *map(str, files),
                        "--ckpt",
                        str(ckpt),
                        "--input-size",
                        "native",
                        "--out",
                        str(tmp / "pred"),
                        "--quiet",
                    ]
                ),
                1,
            )
        }
        show("Peak memory", [{"what": k, "MB": v} for k, v in payload["peak_rss_mb"].items()])
    write(out, payload)
    shutil.rmtree(tmp, ignore_errors=True)
    return payload
