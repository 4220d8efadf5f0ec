"""Crops of full-size photos around the car's edge, for training the edge refiner.

The photos and masks are decoded once into memory (about 10 MB per 1918×1280 pair) with a progress bar;
each sample is then a slice: a square crop whose centre is a random edge pixel moved by up to a quarter
of the crop, flipped left-right at random. Validation crops are fixed (seeded) so that epochs compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from carseg.data.carvana import Record, scan
from carseg.data.checks import check_records
from carseg.data.io import read_image, read_mask
from carseg.errors import CarsegError

# every how many edge pixels one is kept as a crop centre
EDGE_STRIDE = 8


def _load(records: Sequence[Record], what: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Photos, 0/1 masks and the (y, x) of their edge pixels (every EDGE_STRIDE-th)."""
    problems = check_records(list(records))
    if problems:
        files = "\n  ".join(sorted({str(p) for p in problems})[:20])
        raise CarsegError(f"refiner: problem(s) with the {what} files:\n  {files}\nFix or remove these files")
    images, masks, edges = [], [], []
    for record in tqdm(records, desc=f"refiner: reading {what} photos", unit="photo", leave=False):
        image = read_image(record.image)
        mask = read_mask(record, image.shape[:2])
        edge = np.argwhere(mask != cv2.erode(mask, np.ones((3, 3), np.uint8)))[::EDGE_STRIDE]
        if len(edge) == 0:
            continue  # no car in the photo: nothing to refine
        images.append(image)
        masks.append(mask)
        edges.append(edge.astype(np.int32))
    if not images:
        raise CarsegError(f"refiner: none of the {len(records)} {what} photos shows a car edge")
    return images, masks, edges


class EdgeCropDataset(Dataset):
    """`length` random crops (image uint8 (3, S, S), mask float (1, S, S)) around the edges of the photos.

    With `seed` set, crop i is the same every time (validation); without, each draw is new (training)."""

    def __init__(
        self,
        images: list[np.ndarray],
        masks: list[np.ndarray],
        edges: list[np.ndarray],
        crop: int,
        length: int,
        seed: int | None = None,
        flip: bool = True,
    ):
        small = min(min(im.shape[:2]) for im in images)
        if crop % 8 or crop < 32 or crop > small:
            raise CarsegError(f"refiner.data.crop={crop}: give a multiple of 8 from 32 to {small} (the photos)")
        self.images, self.masks, self.edges = images, masks, edges
        self.crop, self.length, self.seed, self.flip = crop, length, seed, flip

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(None if self.seed is None else (self.seed, index))
        i = index % len(self.images) if self.seed is not None else int(rng.integers(len(self.images)))
        image, mask, edge = self.images[i], self.masks[i], self.edges[i]
        h, w = mask.shape
        cy, cx = edge[rng.integers(len(edge))] + rng.integers(-self.crop // 4, self.crop // 4 + 1, size=2)
        y = int(np.clip(cy - self.crop // 2, 0, h - self.crop))
        x = int(np.clip(cx - self.crop // 2, 0, w - self.crop))
        img = image[y : y + self.crop, x : x + self.crop]
        msk = mask[y : y + self.crop, x : x + self.crop]
        if self.flip and rng.random() < 0.5:
            img, msk = img[:, ::-1], msk[:, ::-1]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(msk))[None].float(),
        }


class EdgeCropDataModule(pl.LightningDataModule):
    """Training crops from the full-size pairs in `data_dir` (its `val_cars` left out), validation crops
    from the full-size pairs of `val_cars` in `val_dir` (none when `val_dir` is unset).

    `crops_per_epoch` sets how many crops make an epoch; `val_photos` caps the validation photos."""

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
        mask_source: str = "auto",
        seed: int = 42,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.val_dir = Path(val_dir) if val_dir else None
        self.val_cars = set(val_cars or [])
        self.crop, self.batch_size = int(crop), int(batch_size)
        self.crops_per_epoch, self.val_crops, self.val_photos = int(crops_per_epoch), int(val_crops), int(val_photos)
        self.mask_source, self.seed = mask_source, seed
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
        self.train_set = EdgeCropDataset(*_load(train, "training"), crop=self.crop, length=self.crops_per_epoch)
        if self.val_dir is not None:
            val = [r for r in scan(self.val_dir, self.mask_source) if not self.val_cars or r.car_id in self.val_cars]
            # spread the capped photos over cars and angles
            val = sorted(val, key=lambda r: (r.angle, r.car_id))[:: max(1, len(val) // max(1, self.val_photos))]
            if val:
                self.val_set = EdgeCropDataset(
                    *_load(val, "validation"), crop=self.crop, length=self.val_crops, seed=self.seed, flip=False
                )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else DataLoader(self.val_set, batch_size=self.batch_size)
