"""Crops of full-size photos along the car's edge, for training the edge refiner.

The photos and masks are decoded once into memory (about 10 MB per 1918×1280 pair) with a progress bar.
Given a coarse source (a function from a photo to the coarse model's full-size probabilities, set by the
training stage as `coarse_source`), each photo also keeps those probabilities (uint8, 2.5 MB), and the
crops follow the *predicted* edge, as the refiner will at prediction: a share of them (`hard_fraction`)
centred on pixels the coarse model got wrong within the refiner's band, the rest on its predicted edge.
Without one they follow the true edge. Each crop's centre moves by up to a quarter of the crop, and it is
flipped left-right at random. Validation crops are fixed (seeded) so that epochs compare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from carseg.data.carvana import Record, scan
from carseg.data.checks import check_records
from carseg.data.io import read_image, read_mask
from carseg.errors import CarsegError
from carseg.masks import edge_band

# every how many edge (or error) pixels one is kept as a crop centre
EDGE_STRIDE = 8

# photo (H, W, 3) uint8 -> the coarse model's probabilities of car at full size (H, W) float32 in 0..1
CoarseSource = Callable[[np.ndarray], np.ndarray]


def _edge_pixels(mask: np.ndarray) -> np.ndarray:
    """(y, x) of every EDGE_STRIDE-th pixel on the edge of a 0/1 mask."""
    return np.argwhere(mask != cv2.erode(mask, np.ones((3, 3), np.uint8)))[::EDGE_STRIDE].astype(np.int32)


def _error_pixels(mask: np.ndarray, coarse: np.ndarray, band: int) -> np.ndarray:
    """(y, x) of every EDGE_STRIDE-th pixel within `band` of the coarse mask's edge where it is wrong."""
    predicted = (coarse >= 128).astype(np.uint8)
    region = edge_band(predicted, band)
    return np.argwhere(region & (predicted != mask))[::EDGE_STRIDE].astype(np.int32)


@dataclass
class EdgePhotos:
    """Photos in memory: images, 0/1 masks, the coarse model's probabilities (uint8 0..255, or None each) and
    the crop centres of each photo: `edges` (the predicted edge where there is a coarse input, else the true
    one) and `errors` (the coarse model's wrong pixels in the band; empty without a coarse input)."""

    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    coarse: list[np.ndarray | None] = field(default_factory=list)
    edges: list[np.ndarray] = field(default_factory=list)
    errors: list[np.ndarray] = field(default_factory=list)


def load_photos(
    records: Sequence[Record], what: str, coarse_source: CoarseSource | None = None, band: int = 16
) -> EdgePhotos:
    """Decode the pairs of `records` (and, with `coarse_source`, their coarse probabilities); photos without
    a car edge are left out."""
    problems = check_records(list(records))
    if problems:
        files = "\n  ".join(sorted({str(p) for p in problems})[:20])
        raise CarsegError(f"refiner: problem(s) with the {what} files:\n  {files}\nFix or remove these files")
    photos = EdgePhotos()
    desc = f"refiner: reading {what} photos" + (" and the coarse model's probabilities" if coarse_source else "")
    for record in track(records, description=desc, transient=True):
        image = read_image(record.image)
        mask = read_mask(record, image.shape[:2])
        coarse = None
        if coarse_source is not None:
            coarse = (np.clip(coarse_source(image), 0, 1) * 255 + 0.5).astype(np.uint8)
        edge = _edge_pixels(mask if coarse is None else (coarse >= 128).astype(np.uint8))
        if len(edge) == 0:
            edge = _edge_pixels(mask)
        if len(edge) == 0:
            continue  # no car in the photo (nor in the prediction): nothing to refine
        photos.images.append(image)
        photos.masks.append(mask)
        photos.coarse.append(coarse)
        photos.edges.append(edge)
        photos.errors.append(np.zeros((0, 2), np.int32) if coarse is None else _error_pixels(mask, coarse, band))
    if not photos.images:
        raise CarsegError(f"refiner: none of the {len(records)} {what} photos shows a car edge")
    return photos


class EdgeCropDataset(Dataset):
    """`length` random crops (image uint8 (3, S, S), mask float (1, S, S) and, where the photos have them,
    coarse float (1, S, S) in 0..1) along the edges of the photos.

    A `hard_fraction` share of the crops is centred on the coarse model's errors (where the photo has any).
    With `fixed`, crop i is the same every time (validation); otherwise each draw is new (training), drawn
    from `seed` and the number of draws so far, so that the same seed gives the same crops in the same
    order on any machine (the loader reads them in one process)."""

    def __init__(
        self,
        photos: EdgePhotos,
        crop: int,
        length: int,
        seed: int = 0,
        flip: bool = True,
        hard_fraction: float = 0.0,
        fixed: bool = False,
    ):
        small = min(min(im.shape[:2]) for im in photos.images)
        if crop % 8 or crop < 32 or crop > small:
            raise CarsegError(f"refiner.data.crop={crop}: give a multiple of 8 from 32 to {small} (the photos)")
        if not 0 <= hard_fraction <= 1:
            raise CarsegError(f"refiner.data.hard_fraction={hard_fraction}: give a share from 0 to 1")
        self.photos = photos
        self.crop, self.length, self.seed, self.flip, self.hard_fraction = crop, length, seed, flip, hard_fraction
        self.fixed, self.draws = fixed, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.fixed:
            rng = np.random.default_rng((self.seed, index))
        else:
            rng = np.random.default_rng((self.seed, 1, self.draws))
            self.draws += 1
        p = self.photos
        i = index % len(p.images) if self.fixed else int(rng.integers(len(p.images)))
        image, mask, coarse = p.images[i], p.masks[i], p.coarse[i]
        centres = p.errors[i] if len(p.errors[i]) and rng.random() < self.hard_fraction else p.edges[i]
        h, w = mask.shape
        cy, cx = centres[rng.integers(len(centres))] + rng.integers(-self.crop // 4, self.crop // 4 + 1, size=2)
        y = int(np.clip(cy - self.crop // 2, 0, h - self.crop))
        x = int(np.clip(cx - self.crop // 2, 0, w - self.crop))
        window = (slice(y, y + self.crop), slice(x, x + self.crop))
        parts = {"image": image[window], "mask": mask[window]}
        if coarse is not None:
            parts["coarse"] = coarse[window]
        if self.flip and rng.random() < 0.5:
            parts = {k: v[:, ::-1] for k, v in parts.items()}
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(parts["image"].transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(parts["mask"]))[None].float(),
        }
        if "coarse" in parts:
            out["coarse"] = torch.from_numpy(np.ascontiguousarray(parts["coarse"]))[None].float() / 255
        return out


class EdgeCropDataModule(pl.LightningDataModule):
    """Training crops from the full-size pairs in `data_dir` (its `val_cars` left out), validation crops
    from the full-size pairs of `val_cars` in `val_dir` (none when `val_dir` is unset).

    `crops_per_epoch` sets how many crops make an epoch; `train_photos` and `val_photos` cap the photos held
    in memory (null: all training photos). Set
    `coarse_source` before `setup` to train on a coarse model's own probabilities (`band`: the refiner's
    band, where `hard_fraction` of the crops look for that model's errors)."""

    def __init__(
        self,
        data_dir: str,
        val_dir: str | None = None,
        val_cars: Sequence[str] | None = None,
        crop: int = 256,
        batch_size: int = 16,
        crops_per_epoch: int = 2048,
        val_crops: int = 128,
        val_photos: int = 32,
        train_photos: int | None = None,
        hard_fraction: float = 0.5,
        band: int = 16,
        mask_source: str = "auto",
        seed: int = 42,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.val_dir = Path(val_dir) if val_dir else None
        self.val_cars = set(val_cars or [])
        self.crop, self.batch_size = int(crop), int(batch_size)
        self.crops_per_epoch, self.val_crops, self.val_photos = int(crops_per_epoch), int(val_crops), int(val_photos)
        self.train_photos = int(train_photos) if train_photos else None
        self.hard_fraction, self.band = float(hard_fraction), int(band)
        if self.batch_size < 1 or self.crops_per_epoch < self.batch_size:
            raise CarsegError(
                f"refiner.data.crops_per_epoch={self.crops_per_epoch}, refiner.data.batch_size={self.batch_size}: "
                "an epoch needs at least one whole batch of crops; give crops_per_epoch >= batch_size >= 1"
            )
        self.mask_source, self.seed = mask_source, seed
        self.coarse_source: CoarseSource | None = None
        self.train_set: EdgeCropDataset | None = None
        self.val_set: EdgeCropDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = [r for r in scan(self.data_dir, self.mask_source) if r.car_id not in self.val_cars]
        if not train:
            raise CarsegError(
                f"refiner.data.data_dir={self.data_dir}: no training pair outside the validation cars; "
                "point it at full-size Carvana-layout pairs (e.g. ../shared/carvana/train_full_32)"
            )
        if self.train_photos and len(train) > self.train_photos:  # spread the capped photos over cars and angles
            train = sorted(train, key=lambda r: (r.angle, r.car_id))[:: -(-len(train) // self.train_photos)]
        photos = load_photos(train, "training", self.coarse_source, self.band)
        self.train_set = EdgeCropDataset(
            photos, crop=self.crop, length=self.crops_per_epoch, seed=self.seed, hard_fraction=self.hard_fraction
        )
        if self.val_dir is not None:
            val = [r for r in scan(self.val_dir, self.mask_source) if not self.val_cars or r.car_id in self.val_cars]
            # spread the capped photos over cars and angles
            val = sorted(val, key=lambda r: (r.angle, r.car_id))[:: max(1, len(val) // max(1, self.val_photos))]
            if val:
                self.val_set = EdgeCropDataset(
                    load_photos(val, "validation", self.coarse_source, self.band),
                    crop=self.crop,
                    length=self.val_crops,
                    seed=self.seed,
                    flip=False,
                    fixed=True,  # along the predicted edge only: the band as prediction sees it
                )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else DataLoader(self.val_set, batch_size=self.batch_size)
