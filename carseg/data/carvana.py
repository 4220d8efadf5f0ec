"""The Carvana layout on disk: scan images and masks into records, split them by car id."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carseg.errors import CarsegError

IMAGE_RE = re.compile(r"^(?P<car>[0-9a-f]{12})_(?P<angle>\d{2})\.(?:jpg|jpeg|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class Record:
    """One training pair: the image file and where its mask comes from."""

    car_id: str
    angle: int
    image: Path
    mask: Path | None = None
    rle: str | None = None


def read_rle_table(path: Path) -> dict[str, str]:
    """`train_masks.csv` as {image file name: run-length code}."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["img", "rle_mask"]:
            raise CarsegError(f"{path}: expected a header 'img,rle_mask', found {header}")
        return {row[0]: row[1] for row in reader if row}


def scan(data_dir: str | Path, mask_source: str = "gif") -> list[Record]:
    """Records for every `train/<id>_<NN>.jpg` under `data_dir`, masks from GIFs or `train_masks.csv`."""
    root = Path(data_dir)
    image_dir = root / "train"
    if not image_dir.is_dir():
        raise CarsegError(
            f"{image_dir} not found: datamodule.data_dir must hold the Carvana layout "
            "(train/, train_masks/, train_masks.csv); use datamodule=synthetic for the embedded data"
        )
    if mask_source not in ("gif", "rle"):
        raise CarsegError(f"datamodule.mask_source={mask_source!r}: use 'gif' or 'rle'")
    rles = read_rle_table(root / "train_masks.csv") if mask_source == "rle" else {}
    if mask_source == "rle" and not rles:
        raise CarsegError(f"{root / 'train_masks.csv'} is missing or empty; use datamodule.mask_source=gif")
    records, missing = [], []
    for path in sorted(image_dir.iterdir()):
        match = IMAGE_RE.match(path.name)
        if not match:
            continue
        car, angle = match["car"], int(match["angle"])
        if mask_source == "rle":
            code = rles.get(path.name)
            if code is None:
                missing.append(f"{path.name} (no row in train_masks.csv)")
                continue
            records.append(Record(car, angle, path, rle=code))
        else:
            mask = root / "train_masks" / f"{path.stem}_mask.gif"
            if not mask.is_file():
                missing.append(str(mask))
                continue
            records.append(Record(car, angle, path, mask=mask))
    if missing:
        shown = "\n  ".join(missing[:20]) + ("\n  ..." if len(missing) > 20 else "")
        raise CarsegError(f"{len(missing)} image(s) in {image_dir} have no mask:\n  {shown}")
    if not records:
        raise CarsegError(f"no images named <12-hex id>_<NN>.jpg in {image_dir}")
    return records


def split_by_car(
    records: list[Record], val_fraction: float, seed: int, val_cars: list[str] | None = None
) -> tuple[list[Record], list[Record]]:
    """Train and val records with no car in both: `val_cars` if given, else a seeded share of cars."""
    cars = sorted({r.car_id for r in records})
    if val_cars:
        unknown = sorted(set(val_cars) - set(cars))
        if unknown:
            raise CarsegError(f"datamodule.val_cars names cars not in the data: {unknown[:5]}")
        chosen = set(val_cars)
    else:
        if not 0 < val_fraction < 1:
            raise CarsegError(f"datamodule.val_fraction={val_fraction}: must lie strictly between 0 and 1")
        n_val = max(1, round(len(cars) * val_fraction))
        if n_val >= len(cars):
            raise CarsegError(f"only {len(cars)} car(s) in the data: too few to split off validation cars")
        chosen = set(np.random.default_rng(seed).permutation(cars)[:n_val].tolist())
    train = [r for r in records if r.car_id not in chosen]
    val = [r for r in records if r.car_id in chosen]
    return train, val
