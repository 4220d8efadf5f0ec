"""Input pipeline speed: full-size decode vs reduced decode vs cache, 0/1/2 workers, next to the model's step."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carseg.bench.measure import build_module, loader_rate
from carseg.bench.report import show, write
from carseg.data.cache import build_cache
from carseg.data.carvana import scan
from carseg.data.datamodule import CarvanaDataset
from carseg.data.io import image_size
from carseg.data.rle import rle_decode, rle_encode
from carseg.hardware import cpu_has_bf16


def train_step_rate(model: str, size: tuple[int, int], batch_size: int = 8, steps: int = 3) -> float:
    """Training images per second of `model=<model>` (bf16 autocast where the CPU has it, channels_last)."""
    module = build_module(model).train()
    opt = torch.optim.AdamW(module.parameters(), 1e-3)
    x = torch.randint(0, 255, (batch_size, 3, *size), dtype=torch.uint8)
    y = (torch.rand(batch_size, 1, *size) > 0.5).float()
    dtype = torch.bfloat16 if cpu_has_bf16() else torch.float32
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16):
            loss = module.loss_fn(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def rle_timing(shape: tuple[int, int] = (1280, 1918), repeats: int = 5) -> dict[str, float]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = ((yy - shape[0] / 2) ** 2 / 0.2 + (xx - shape[1] / 2) ** 2 / 0.6 < shape[0] ** 2).astype(np.uint8)
    code = rle_encode(mask)
    t0 = time.perf_counter()
    for _ in range(repeats):
        rle_encode(mask)
    t1 = time.perf_counter()
    for _ in range(repeats):
        rle_decode(code, shape)
    t2 = time.perf_counter()
    return {"encode_ms": 1000 * (t1 - t0) / repeats, "decode_ms": 1000 * (t2 - t1) / repeats}


def run(
    data_dir: str | Path,
    size: tuple[int, int] = (320, 480),
    images: int = 64,
    workers: tuple[int, ...] = (0, 1, 2),
    models: tuple[str, ...] = ("unet_resnet18_light", "unet_resnet34"),
    out: str | Path = "bench/data.json",
) -> dict[str, Any]:
    """Measure and print; write JSON to `out`."""
    data_dir = Path(data_dir)
    records = scan(data_dir, "gif")[:images]
    cache_base = Path(tempfile.mkdtemp(prefix="carseg-bench-cache-"))  # never write into the data folder
    build_cache(cache_base, size, records, progress=False)
    modes = {
        "full decode, GIF mask": CarvanaDataset(records, size, reduced_decode=False),
        "reduced decode, GIF mask": CarvanaDataset(records, size),
    }
    if (data_dir / "train_masks.csv").is_file():
        modes["reduced decode, RLE mask"] = CarvanaDataset(scan(data_dir, "rle")[:images], size)
    modes["cache"] = CarvanaDataset(records, size, cache_root=cache_base)
    rows = []
    for name, dataset in modes.items():
        row: dict[str, Any] = {"loader": name}
        for w in workers:
            row[f"{w} workers img/s"] = round(loader_rate(dataset, w), 1)
        rows.append(row)
    shutil.rmtree(cache_base, ignore_errors=True)
    steps = [{"model": model, "train step img/s": round(train_step_rate(model, size), 2)} for model in models]
    decode_rate = rows[-2][f"{max(workers)} workers img/s"]  # the default decoding path, most workers
    for s in steps:
        s[f"loader/step ratio ({rows[-2]['loader']}, {max(workers)} workers)"] = round(
            decode_rate / s["train step img/s"], 1
        )
    one_worker = rows[-2].get("1 workers img/s")  # the fastest decoding path, one worker
    source = image_size(records[0].image)
    show(f"Data loading at {size[0]}x{size[1]} from {source[1]}x{source[0]} ({data_dir})", rows)
    show(f"Training step at {size[0]}x{size[1]}, batch 8", steps)
    rle = rle_timing()
    show("Run-length code, one 1918x1280 mask", [{k: round(v, 2) for k, v in rle.items()}])
    payload = {
        "data_dir": str(data_dir),
        "source_size": list(source),
        "size": list(size),
        "images": len(records),
        "loaders": rows,
        "train_steps": steps,
        "rle_1918x1280": rle,
        "workers_for_1000_img_s_gpu": int(np.ceil(1000 / one_worker)) if one_worker else None,
    }
    write(out, payload)
    return payload
