"""Zoomed full-size crops of the car's edge, before and after the edge refiner, for the README: the roof
line, the wheels and the spot the refiner changed most on a side view, and the photo whose car is closest
to its backdrop's colour."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from carseg.data.carvana import Record, scan
from carseg.data.io import read_image, read_mask
from carseg.errors import CarsegError
from carseg.evaluation.metrics import EDGE_BACKGROUND
from carseg.evaluation.plots import edge_crop_panels, edge_spots
from carseg.inference.background import composite
from carseg.inference.predictor import Predictor

COLUMNS = ("true mask", "before: model at 320x480, upsampled", "after: edge refiner")


def edge_contrast(image: np.ndarray, truth: np.ndarray) -> float:
    """How far the car's colour is from the backdrop's along its edge: the mean RGB distance between
    the average colour 2–6 px inside and 2–6 px outside the true edge, around each edge pixel."""
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(truth, kernel, iterations=2) & ~cv2.erode(truth, kernel, iterations=6) & 1
    outer = cv2.dilate(truth, kernel, iterations=6) & ~cv2.dilate(truth, kernel, iterations=2) & 1
    edge = truth & ~cv2.erode(truth, kernel) & 1
    if not edge.any() or not inner.any() or not outer.any():
        return float("inf")
    img = image.astype(np.float32)

    def local_mean(ring: np.ndarray) -> np.ndarray:
        weight = cv2.blur(ring.astype(np.float32), (15, 15))[..., None]
        return cv2.blur(img * ring[..., None], (15, 15)) / np.maximum(weight, 1e-6)

    diff = np.abs(local_mean(inner) - local_mean(outer)).sum(-1)
    return float(diff[edge.astype(bool)].mean())


def _crop(picture: np.ndarray, centre: tuple[int, int], size: int, zoom: int) -> np.ndarray:
    h, w = picture.shape[:2]
    y = min(max(centre[0] - size // 2, 0), h - size)
    x = min(max(centre[1] - size // 2, 0), w - size)
    part = picture[y : y + size, x : x + size]
    return np.repeat(np.repeat(part, zoom, 0), zoom, 1)


def edge_figure(ckpt: str | Path, eval_dir: str | Path, out: str | Path, tta: bool = True, size: int = 72) -> Path:
    """Write the figure to `out`; `ckpt` must carry an edge refiner."""
    after = Predictor(ckpt=ckpt, tta=tta)
    if after.refiner is None:
        raise CarsegError(f"{ckpt}: no edge refiner in this checkpoint (train with refiner=edge)")
    before = Predictor(ckpt=ckpt, tta=tta, edge_refiner=False)
    records = scan(eval_dir)
    if not records:
        raise CarsegError(f"{eval_dir}: no Carvana-layout photos")
    side: Record = next((r for r in records if r.angle == 5), records[0])
    contrast = []
    for record in records:
        image = read_image(record.image)
        contrast.append((edge_contrast(image, read_mask(record, image.shape[:2])), record.image.name, record))
    closest = min(contrast, key=lambda c: c[:2])[2]
    rows = []
    for record, wanted in ((side, None), (closest, ("roof line", "most changed"))):
        image = read_image(record.image)
        truth = read_mask(record, image.shape[:2])
        (mask_b, alpha_b), (mask_a, alpha_a) = before.mattes([image])[0], after.mattes([image])[0]
        ground = np.broadcast_to(np.asarray(EDGE_BACKGROUND, np.uint8), image.shape)
        pictures = [
            composite(image, m, ground, alpha=a) for m, a in ((truth, None), (mask_b, alpha_b), (mask_a, alpha_a))
        ]
        for name, centre in edge_spots(truth, mask_b, mask_a).items():
            if wanted is None or name in wanted:
                label = f"{record.image.stem}: {name}" + (" (car close to the backdrop)" if wanted else "")
                rows.append((label, [_crop(p, centre, size, 4) for p in pictures]))
    return edge_crop_panels(rows, COLUMNS, out, title=f"full-size crops (x4) on a new background, {Path(ckpt).name}")
