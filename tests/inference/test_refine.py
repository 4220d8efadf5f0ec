"""Guided-filter boundary refinement."""

import numpy as np
import pytest

from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor
from carseg.inference.refine import guided_filter, refine_probabilities


def _edge_scene(edge: int = 50, width: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A dark car left of column `edge` on a light backdrop, and a blurred mask whose 0.5 level sits 4 px early."""
    image = np.full((40, width, 3), 230, np.uint8)
    image[:, :edge] = 40
    x = np.arange(width, dtype=np.float32)
    probs = np.tile(1 / (1 + np.exp((x - (edge - 4)) / 3)), (40, 1)).astype(np.float32)
    return image, probs


def test_refinement_pulls_the_boundary_to_the_photo_edge():
    image, probs = _edge_scene()
    before = int((probs[20] > 0.5).sum())
    after = int((refine_probabilities(image, probs, radius=8, eps=1e-3)[20] > 0.5).sum())
    assert before == 46
    assert abs(after - 50) < abs(before - 50)


def test_guided_filter_keeps_a_constant_and_follows_the_guide():
    guide = np.random.default_rng(0).random((30, 30)).astype(np.float32)
    flat = np.full((30, 30), 0.7, np.float32)
    assert np.allclose(guided_filter(guide, flat, 3, 1e-2), 0.7, atol=1e-4)
    assert np.allclose(guided_filter(guide, guide, 3, 1e-8), guide, atol=1e-2)


@pytest.mark.slow
def test_predictor_refinement(best_ckpt, tiny_data):
    from carseg.data.io import read_image

    image = read_image(next((tiny_data / "train").glob("*.jpg")))
    plain = Predictor(ckpt=best_ckpt, precision="32").masks([image])[0]
    refined = Predictor(ckpt=best_ckpt, precision="32", refine_radius=2).masks([image])[0]
    assert refined.shape == plain.shape == image.shape[:2]
    assert 0 < (refined != plain).mean() < 0.05  # moves edge pixels only
    with pytest.raises(CarsegError, match="refine_radius"):
        Predictor(ckpt=best_ckpt, refine_radius=-1)
