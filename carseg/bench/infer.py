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
from carseg.errors import CarsegError
from carseg.hardware import inference_precision
from carseg.inference.export import export_onnx
from carseg.inference.predictor import Predictor, compile_mode
from carseg.models.checkpoint import embed_refiner, load_refiner
from carseg.models.refiner import EdgeRefiner

AGREEMENT_TO_COUNT = 0.999


def _default_path(device: str) -> dict[str, Any]:
    """What Predictor does by default on `device` (precision "auto", channels_last, compile "auto")."""

    dev = torch.device(device)
    return {"precision": inference_precision("auto", dev), "channels_last": True, "compile": compile_mode("auto", dev)}


def forward_gflops(predictor: Predictor, shape: tuple[int, int]) -> float:
    """Counted GFLOP of one forward pass at `shape` (padded as the model pads)."""
    x = torch.zeros(1, 3, *shape, device=predictor.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        predictor.module(x)
    return counter.get_total_flops() / 1e9


def time_path(
    predictor: Predictor, images: list[np.ndarray], batch: int = 1, warmup: int = 1, cuda: bool = False
) -> tuple[float, np.ndarray]:
    """Seconds per image at `batch` photos a call, and the masks of `images` (in batches of `batch`)."""
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    for chunk in batches[:warmup]:
        predictor.masks(chunk)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    masks = np.concatenate([predictor.masks(chunk) for chunk in batches])
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(images), masks


# the paths measured, each a Predictor's settings, on each device (compiled modes on a GPU in bf16)
PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "eager fp32": {"precision": "32", "channels_last": False, "compile": "off"},
        "channels_last fp32": {"precision": "32", "channels_last": True, "compile": "off"},
        "channels_last + bf16 autocast": {"precision": "bf16", "channels_last": True, "compile": "off"},
        "torch.compile fp32 (channels_last)": {"precision": "32", "channels_last": True, "compile": "default"},
    },
    "cuda": {
        "eager fp32": {"precision": "32", "channels_last": False, "compile": "off"},
        "channels_last + bf16 autocast": {"precision": "bf16", "channels_last": True, "compile": "off"},
        "torch.compile bf16": {"precision": "bf16", "channels_last": True, "compile": "default"},
        "torch.compile max-autotune bf16": {"precision": "bf16", "channels_last": True, "compile": "max-autotune"},
        "torch.compile CUDA graphs bf16": {"precision": "bf16", "channels_last": True, "compile": "reduce-overhead"},
    },
}
BATCHES = {"cpu": (1,), "cuda": (1, 4, 8, 16)}


def plan(names: list[str], batches: tuple[int, ...], edges: list[bool]) -> list[tuple[bool, str, int]]:
    """(edge refiner, path, batch) in the order they are measured, the most telling first (a budget cuts the
    tail): the references (eager fp32, batch 1), then every path at the middle batch without and with the
    refiner, then the other batches."""
    middle = batches[len(batches) // 2]
    rows = [(edge, names[0], 1) for edge in edges]
    rows += [(edge, name, middle) for edge in edges for name in names]
    rows += [(edge, name, b) for edge in edges for b in batches if b != middle for name in names]
    return list(dict.fromkeys(rows))


def with_random_refiner(ckpt: Path, out: Path, band: int = 16) -> Path:
    """A copy of `ckpt` carrying an untrained edge refiner (not the identity), to time the refiner's cost."""

    torch.manual_seed(0)
    shutil.copy(ckpt, out)
    return embed_refiner(out, EdgeRefiner(residual=False), band)


def run(
    data_dir: str | Path,
    ckpt: str | Path | None = None,
    images: int = 3,
    compile_: bool = True,
    rss: bool = True,
    out: str | Path = "bench/infer.json",
    device: str = "cpu",
    batches: tuple[int, ...] | None = None,
    refiner: bool = True,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Time each inference path of `PATHS[device]` at each batch size of `batches`, with the edge refiner off
    and on, at the photos' own size, on `device`; each row with its mask agreement against eager fp32 (batch 1,
    the same refiner setting) and, on a GPU, its peak memory. ONNX Runtime runs once at batch 1. Rows beyond
    `budget_s` seconds are skipped (listed as such). The fastest agreeing row is what a GPU should use."""
    cuda, where = device == "cuda", check_device(device, "bench infer")
    batches = tuple(batches or BATCHES[device])
    files = sorted(Path(data_dir, "train").glob("*.jpg")) or sorted(Path(data_dir).glob("*.jpg"))
    if not files:
        raise CarsegError(f"{data_dir}: no JPEG photos (in it or in its train/ folder)")
    count = max(images, max(batches))
    pictures = [read_image(files[i % len(files)]) for i in range(count)]
    shape = pictures[0].shape[:2]
    tmp = Path(tempfile.mkdtemp(prefix="carseg-bench-infer-"))
    ckpt = Path(ckpt) if ckpt else random_checkpoint(tmp / "unet_resnet34.ckpt", "unet_resnet34")
    checkpoints = {False: ckpt}
    if refiner:
        checkpoints[True] = ckpt if load_refiner(ckpt) is not None else with_random_refiner(ckpt, tmp / "refined.ckpt")
    paths = {k: v for k, v in PATHS[device].items() if compile_ or v["compile"] == "off"}
    started, gflop, rows, references = time.monotonic(), None, [], {}
    for edge, name, batch in plan(list(paths), batches, list(checkpoints)):
        settings, path_ckpt = paths[name], checkpoints[edge]
        row: dict[str, Any] = {"path": name, "batch": batch, "edge refiner": edge}
        if budget_s is not None and time.monotonic() - started > budget_s and edge in references:
            rows.append({**row, "skipped": f"over the {budget_s:.0f} s budget"})
            continue
        if cuda:
            reset_gpu_peak()
        predictor = Predictor(ckpt=path_ckpt, input_size=None, device=device, edge_refiner=edge, **settings)
        if gflop is None:
            gflop = forward_gflops(predictor, shape)
        warmup = 2 if settings["compile"] != "off" else 1
        seconds, masks = time_path(predictor, pictures, batch, warmup, cuda)
        reference = references.setdefault(edge, masks)  # the first row of each setting: eager fp32, batch 1
        agreement = float((masks == reference).mean())
        row |= {
            "s/img": round(seconds, 4),
            "img/s": round(1 / seconds, 2),
            "GFLOP/s": round(gflop / seconds, 1),
            "mask agreement": round(agreement, 5),
            "counts": agreement >= AGREEMENT_TO_COUNT,
        }
        if cuda:
            row["peak GPU MiB"] = gpu_peak_mib()
        rows.append(row)
        del predictor
    providers = ort.get_available_providers()
    provider = "CUDAExecutionProvider" if cuda and "CUDAExecutionProvider" in providers else "CPUExecutionProvider"
    onnx_path = export_onnx(ckpt, tmp / "model.onnx")
    onnx = Predictor(onnx=onnx_path, input_size=None, threads=torch.get_num_threads(), edge_refiner=False)
    seconds, masks = time_path(onnx, pictures[: max(1, images)], 1, 1)
    agreement = float((masks == references[False][: len(masks)]).mean())
    rows.append(
        {
            "path": f"ONNX Runtime fp32 ({provider})",
            "batch": 1,
            "edge refiner": False,
            "s/img": round(seconds, 4),
            "img/s": round(1 / seconds, 2),
            "GFLOP/s": round(gflop / seconds, 1),
            "mask agreement": round(agreement, 5),
            "counts": agreement >= AGREEMENT_TO_COUNT,
        }
    )
    measured = [r for r in rows if "s/img" in r]
    fastest = {
        edge: min((r for r in measured if r["counts"] and r["edge refiner"] == edge), key=lambda r: r["s/img"])
        for edge in checkpoints
    }
    show(f"Full-resolution inference on {where}, {shape[1]}x{shape[0]}, {gflop:.0f} GFLOP/forward", rows)
    for edge, row in fastest.items():
        console.info(
            f"fastest path agreeing with fp32 on >= {AGREEMENT_TO_COUNT:.1%} of pixels, edge refiner "
            f"{'on' if edge else 'off'}: {row['path']} at batch {row['batch']}, {row['img/s']} img/s"
        )
    payload: dict[str, Any] = {
        "device": where,
        "torch": torch.__version__,
        "image_size": list(shape),
        "checkpoint": str(ckpt),
        "gflop_per_forward": gflop,
        "batches": list(batches),
        "paths": rows,
        "fastest_agreeing": fastest[False]["path"],
        "fastest_agreeing_rows": {"refiner_off": fastest[False], **({"refiner_on": fastest[True]} if refiner else {})},
        "predictor_default_on_this_device": _default_path(device),
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
