"""Kaggle's Carvana run-length code: row-major pixel order, 1-indexed starts, `start length` pairs."""

from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D binary mask (H, W) as Kaggle's run-length string."""
    flat = np.asarray(mask, dtype=bool).ravel()
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    edges[1::2] -= edges[::2]
    return " ".join(map(str, edges))


def rle_decode(code: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode Kaggle's run-length string into a uint8 mask of `shape` (H, W), values 0/1."""
    height, width = shape
    mask = np.zeros(height * width, dtype=np.uint8)
    numbers = np.array(code.split(), dtype=np.int64) if isinstance(code, str) else np.array([], np.int64)
    if numbers.size % 2:
        raise ValueError("run-length code has an odd number of values")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if numbers.size and (starts.min() < 0 or (starts + lengths).max() > mask.size):
        raise ValueError(f"run-length code runs outside a {height}x{width} mask")
    # Vectorised fill: the index of every pixel of every run, from each run's offset and a global arange.
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    mask[offsets + np.arange(offsets.size)] = 1
    return mask.reshape(height, width)
