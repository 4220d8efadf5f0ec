"""Boundary refinement at full resolution: a guided filter steers the upsampled mask to the photo's edges.

He, Sun and Tang's guided filter (gray guide), from OpenCV box filters: opencv-contrib's
`ximgproc.guidedFilter` would clash with the opencv-python-headless build that albumentations needs.
"""

from __future__ import annotations

import cv2
import numpy as np


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of `src` (H, W float32) along the edges of `guide` (H, W float32, 0..1)."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    a = (box(guide * src) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def refine_probabilities(image: np.ndarray, probs: np.ndarray, radius: int = 4, eps: float = 1e-2) -> np.ndarray:
    """Car probabilities (H, W) refined along the edges of the RGB uint8 `image` (H, W, 3), clipped to 0..1."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    return np.clip(guided_filter(gray, probs.astype(np.float32), radius, eps), 0.0, 1.0)
