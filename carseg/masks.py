"""The geometry of 0/1 masks that prediction, refinement, training and evaluation share: the band around a
mask's edge, as NumPy arrays (H, W) and as tensors (N, 1, H, W) on any device, one definition for both."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def inner_edge(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner edge (H, W) bool of a 0/1 mask: car pixels with a background pixel among their
    8 neighbours (the frame counts as more of the mask)."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)).astype(bool)


def edge_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels (H, W) bool with both classes of a 0/1 mask within `radius` pixels (square neighbourhood):
    the band of half-width `radius` around its edge, on either side; none where the mask has no edge."""
    if radius < 1:
        raise ValueError(f"radius={radius}: the band needs at least 1 pixel")
    m = mask.astype(np.uint8, copy=False)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    dilated = cv2.dilate(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    eroded = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return dilated != eroded


def band_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """`edge_band` of a batch of 0/1 masks (N, 1, H, W), float or bool, on its own device."""
    m = mask.float()
    k = 2 * radius + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=radius)  # padding counts as background
    eroded = -F.max_pool2d(-m, k, stride=1, padding=radius)  # and here as car: the frame is no edge
    return dilated != eroded


def edge_weights(mask: torch.Tensor, weight: float, radius: int) -> torch.Tensor:
    """Per-pixel loss weights (N, 1, H, W) float: `weight` within `radius` pixels of the edge of 0/1 masks
    (`band_mask`), 1 elsewhere."""
    return 1 + (weight - 1) * band_mask(mask, radius).float()
