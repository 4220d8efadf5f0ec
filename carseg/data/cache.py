"""A pre-resized cache of image/mask pairs (`.npy`), for repeated epochs at one training size."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from rich.progress import track

from carseg.data.carvana import Record
from carseg.data.io import image_size, read_image, read_mask, resize_pair


def cache_path(data_dir: str | Path, size: Sequence[int], soft: bool = False) -> Path:
    """Where the cache of `data_dir` at `size` (H, W) lives (`soft`: masks as the car's share of each pixel)."""
    return Path(data_dir) / f"cache_{size[0]}x{size[1]}{'_soft' if soft else ''}"


def is_cached(data_dir: str | Path, size: Sequence[int], records: Sequence[Record], soft: bool = False) -> bool:
    meta = cache_path(data_dir, size, soft) / "cache.json"
    if not meta.is_file():
        return False
    names = set(json.loads(meta.read_text())["names"])
    return all(r.image.stem in names for r in records)


def load_pair(
    data_dir: str | Path, size: Sequence[int], record: Record, soft: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The cached (image RGB uint8, mask uint8) of `record`."""
    root = cache_path(data_dir, size, soft)
    return np.load(root / "images" / f"{record.image.stem}.npy"), np.load(root / "masks" / f"{record.image.stem}.npy")


def build_cache(
    data_dir: str | Path, size: Sequence[int], records: Sequence[Record], progress: bool = True, soft: bool = False
) -> Path:
    """Decode (at reduced scale where possible), resize and store every pair; atomic per cache."""
    size = (int(size[0]), int(size[1]))
    out = cache_path(data_dir, size, soft)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    iterator: Iterable[Record] = records
    if progress:
        iterator = track(records, description=f"caching {len(records)} pairs at {size[0]}x{size[1]}")
    for record in iterator:
        full = image_size(record.image)
        image, mask = resize_pair(read_image(record.image, size, full), read_mask(record, full), size, soft)
        np.save(tmp / "images" / f"{record.image.stem}.npy", image)
        np.save(tmp / "masks" / f"{record.image.stem}.npy", mask)
    (tmp / "cache.json").write_text(
        json.dumps({"size": list(size), "names": [r.image.stem for r in records], "soft": soft})
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
