"""Decoding images and masks, at reduced scale when the target size is much smaller."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from carseg.data.carvana import Record
from carseg.data.rle import rle_decode
from carseg.errors import CarsegError

cv2.setNumThreads(0)  # DataLoader workers bring the parallelism


def read_image(path: Path, size: tuple[int, int] | None = None, full: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3); with a target `size` (H, W), a JPEG is decoded at 1/2, 1/4 or 1/8 scale
    inside the decoder where that still covers the target (`full` is its (H, W) when known)."""
    flag = cv2.IMREAD_COLOR
    if size is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        height, width = full or image_size(path)
        factor = min(width / size[1], height / size[0])
        for reduce, reduced_flag in (
            (8, cv2.IMREAD_REDUCED_COLOR_8),
            (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2),
        ):
            if factor >= reduce:
                flag = reduced_flag
                break
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        raise CarsegError(f"{path}: cannot be read as an image (missing, corrupt or not an image file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(record: Record, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask 0/1 of the full-size image `shape` (H, W), from the GIF or the run-length code."""
    if record.rle is not None:
        return rle_decode(record.rle, shape)
    assert record.mask is not None
    try:
        with Image.open(record.mask) as im:
            mask = np.asarray(im.convert("L") if im.mode not in ("P", "L", "1") else im)
    except OSError as err:
        raise CarsegError(f"{record.mask}: cannot be read as a mask ({err})") from err
    return (mask > 0).astype(np.uint8)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file without decoding it."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except OSError as err:
        raise CarsegError(f"{path}: cannot be read as an image ({err}); replace or remove the file") from err


def resize_pair(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int], soft: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Resize to `size` (H, W) with the area filter. The mask is area-averaged, then thresholded at 0.5
    (uint8 0/1), or with `soft` kept as the car's share of each pixel (uint8 0..255)."""
    h, w = size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if mask.shape[:2] != (h, w):
        share = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        mask = np.rint(share * 255).astype(np.uint8) if soft else (share >= 0.5).astype(np.uint8)
    elif soft:
        mask = (mask > 0).astype(np.uint8) * 255
    return image, mask
