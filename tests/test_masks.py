"""The one edge band: NumPy and tensor forms agree, on every device's kind of input."""

import cv2
import numpy as np
import pytest
import torch

from carseg.masks import band_mask, edge_band


@pytest.mark.parametrize("radius", [1, 3, 8])
def test_numpy_and_tensor_bands_are_the_same_pixels(radius):
    rng = np.random.default_rng(radius)
    for _ in range(10):
        noise = (rng.random((41, 57)) * 255).astype(np.uint8)
        mask = (cv2.GaussianBlur(noise, (9, 9), 3) > 127).astype(np.uint8)
        numpy_band = edge_band(mask, radius)
        tensor_band = band_mask(torch.from_numpy(mask)[None, None], radius)[0, 0].numpy()
        assert (numpy_band == tensor_band).all()


def test_the_band_is_the_pixels_near_both_classes():
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 10:] = 1  # one vertical edge between columns 9 and 10; the frame is no edge
    band = edge_band(mask, 2)
    assert band[:, 8:12].all() and not band[:, :8].any() and not band[:, 12:].any()
    assert not edge_band(np.ones((9, 9), np.uint8), 3).any()
    with pytest.raises(ValueError, match="radius"):
        edge_band(mask, 0)
