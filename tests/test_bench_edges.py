"""The README's edge crops: where they look, how a car close to its backdrop is found, the figure itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from carseg.bench.edges import edge_contrast, edge_figure
from carseg.errors import CarsegError
from carseg.evaluation.plots import edge_spots
from carseg.models.checkpoint import embed_refiner
from carseg.models.refiner import EdgeRefiner


def _car(h: int = 120, w: int = 200) -> np.ndarray:
    truth = np.zeros((h, w), np.uint8)
    truth[30:90, 40:160] = 1
    truth[90:100, 50:70] = 1  # a wheel on the left, lower on that side
    truth[90:96, 130:150] = 1  # and one on the right
    return truth


def test_edge_spots_find_roof_wheels_and_the_change():
    truth = _car()
    after = truth.copy()
    after[60:70, 160:170] = 1  # the second mask differs at the car's right end
    spots = edge_spots(truth, truth, after)
    assert spots["roof line"][0] == 30
    assert spots["wheel, left"] == (99, 59) and spots["wheel, right"] == (95, 139)
    y, x = spots["most changed"]
    assert 55 <= y <= 75 and 155 <= x <= 175


def test_a_car_like_its_backdrop_has_less_edge_contrast():
    truth = _car()
    backdrop = np.full((*truth.shape, 3), 220, np.uint8)
    dark, pale = backdrop.copy(), backdrop.copy()
    dark[truth == 1] = 30
    pale[truth == 1] = 200
    assert edge_contrast(pale, truth) < edge_contrast(dark, truth)
    assert edge_contrast(dark, np.zeros_like(truth)) == float("inf")  # no car, never chosen


def test_edge_figure_needs_a_refiner(small_ckpt, tiny_data):
    with pytest.raises(CarsegError, match="no edge refiner"):
        edge_figure(small_ckpt, tiny_data, "unused.png")


def test_edge_figure_is_written(small_ckpt, tiny_data, tmp_path):
    path = tmp_path / "refined.ckpt"
    path.write_bytes(small_ckpt.read_bytes())
    torch.manual_seed(0)
    embed_refiner(path, EdgeRefiner(width=8), band=4)
    out = edge_figure(path, tiny_data, tmp_path / "edges.png", size=32)
    with Image.open(out) as im:
        assert im.width > 600 and im.height > 200
