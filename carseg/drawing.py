"""Drawing on photos: masks as tinted overlays."""

from __future__ import annotations

import numpy as np

TRUTH_COLOUR = (0, 200, 0)
PREDICTION_COLOUR = (220, 0, 220)


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Tint the masked pixels of an RGB uint8 image."""
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = 0.55 * out[m] + 0.45 * np.array(colour, np.float32)
    return out.astype(np.uint8)
