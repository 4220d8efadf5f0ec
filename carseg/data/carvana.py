"""The Carvana layout on disk: scan images and masks into records, split them by car id."""

from __future__ import annotations

import csv
import os
import re
import shutil
import zipfile
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


KAGGLE_FILES = {  # zip as downloaded → what it holds
    "train.zip": "train",
    "train_masks.zip": "train_masks",
    "train_masks.csv.zip": "train_masks.csv",
    "metadata.csv.zip": "metadata.csv",
    "test.zip": "test",
}


def extract_kaggle_zips(data_dir: str | Path) -> list[str]:
    """Extract Kaggle's zip files in `data_dir` once (atomically); returns what was extracted."""
    root = Path(data_dir)
    done = []
    for archive, target in KAGGLE_FILES.items():
        zip_path, target_path = root / archive, root / target
        if not zip_path.is_file() or target_path.exists():
            continue
        tmp = root / f".extract-{target}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CarsegError(f"{zip_path}: not a valid zip ({err}); download it again") from err
        found = next((p for p in [tmp / target, *tmp.glob(f"*/{target}")] if p.exists()), None)
        if found is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CarsegError(f"{zip_path} does not hold {target}; is it the Carvana competition file?")
        os.replace(found, target_path)
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(target)
    return done


def scan(data_dir: str | Path, mask_source: str = "gif") -> list[Record]:
    """Records for every `train/<id>_<NN>.jpg` under `data_dir`, masks from GIFs or `train_masks.csv`
    (`auto`: the CSV where there is one).

    A record whose mask is missing keeps `mask` pointing where the GIF should be (or has neither mask
    nor rle): `carseg.data.checks` reports it.
    """
    root = Path(data_dir)
    image_dir = root / "train"
    if not image_dir.is_dir():
        raise CarsegError(
            f"{image_dir} not found: datamodule.data_dir must hold the Carvana layout "
            "(train/, train_masks/, train_masks.csv, or Kaggle's zip files); "
            "use datamodule=synthetic for the embedded data, or `carseg data download DIR`"
        )
    if mask_source not in ("gif", "rle", "auto"):
        raise CarsegError(f"datamodule.mask_source={mask_source!r}: use 'gif', 'rle' or 'auto'")
    if mask_source == "auto":  # run-length codes decode about 10x faster than GIFs
        mask_source = "rle" if (root / "train_masks.csv").is_file() else "gif"
    rles: dict[str, str] = {}
    if mask_source == "rle":
        if not (root / "train_masks.csv").is_file():
            raise CarsegError(f"{root / 'train_masks.csv'} is missing; use datamodule.mask_source=gif")
        rles = read_rle_table(root / "train_masks.csv")
    records = []
    for path in sorted(image_dir.iterdir()):
        match = IMAGE_RE.match(path.name)
        if not match:
            continue
        car, angle = match["car"], int(match["angle"])
        if mask_source == "rle":
            records.append(Record(car, angle, path, rle=rles.get(path.name)))
        else:
            records.append(Record(car, angle, path, mask=root / "train_masks" / f"{path.stem}_mask.gif"))
    if not records:
        raise CarsegError(f"no images named <12-hex id>_<NN>.jpg in {image_dir}")
    return records


def read_car_list(path: str | Path, key: str = "datamodule.val_cars_file") -> list[str]:
    """Car ids from a text file (one per line, `#` comments) or a CSV with an `id` or `car_id` column; `key`
    names the setting in the error for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise CarsegError(f"{key}={path}: no such file")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line]
    if lines and "," in lines[0]:
        header = [h.strip() for h in lines[0].split(",")]
        column = next((header.index(c) for c in ("id", "car_id") if c in header), None)
        if column is None:
            raise CarsegError(f"{path}: a CSV needs an 'id' or 'car_id' column")
        return [line.split(",")[column].strip() for line in lines[1:]]
    return [line.split("_")[0] for line in lines]


def split_by_car(
    records: list[Record],
    val_fraction: float,
    seed: int,
    val_cars: list[str] | None = None,
    fold: int | None = None,
    num_folds: int = 5,
) -> tuple[list[Record], list[Record]]:
    """Train and val records with no car in both.

    Validation cars are `val_cars` if given; else fold `fold` of `num_folds` seeded groups of cars
    (group k-fold); else a seeded `val_fraction` of the cars.
    """
    cars = sorted({r.car_id for r in records})
    if val_cars:
        unknown = sorted(set(val_cars) - set(cars))
        if unknown:
            raise CarsegError(f"datamodule.val_cars names cars not in the data: {unknown[:5]}")
        chosen = set(val_cars)
    elif fold is not None:
        if not 2 <= num_folds <= len(cars):
            raise CarsegError(f"datamodule.num_folds={num_folds}: must lie between 2 and the {len(cars)} cars")
        if not 0 <= fold < num_folds:
            raise CarsegError(f"datamodule.fold={fold}: must lie in 0..{num_folds - 1} (datamodule.num_folds)")
        groups = np.array_split(np.random.default_rng(seed).permutation(cars), num_folds)
        chosen = set(groups[fold].tolist())
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
