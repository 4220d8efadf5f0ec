"""Crops for the edge refiner: with a coarse model's probabilities they follow its predicted edge and its
mistakes, as the refiner will at prediction; without, the true edge."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from carseg.data.carvana import scan
from carseg.data.edge_crops import EdgeCropDataset, load_photos
from carseg.data.io import read_image, read_mask
from carseg.errors import CarsegError

SHIFT = 6  # the stand-in coarse model puts the edge this many pixels right of the truth


def _shifted(image: np.ndarray, records: dict) -> np.ndarray:
    """A coarse 'model' that is wrong in a known way: the true mask moved SHIFT pixels right, softly."""
    mask = records[image.tobytes()[:4096]].astype(np.float32)
    moved = np.zeros_like(mask)
    moved[:, SHIFT:] = mask[:, :-SHIFT]
    return moved * 0.9 + 0.05


@pytest.fixture
def pairs(tiny_data):
    records = scan(tiny_data)[:6]
    truth = {}
    for r in records:
        image = read_image(r.image)
        truth[image.tobytes()[:4096]] = read_mask(r, image.shape[:2])
    return records, truth


def test_crops_follow_the_coarse_models_edge_and_mistakes(pairs):
    records, truth = pairs
    photos = load_photos(records, "test", lambda im: _shifted(im, truth), band=8)
    assert all(c is not None and c.dtype == np.uint8 for c in photos.coarse)
    for mask, coarse, edge, errors in zip(photos.masks, photos.coarse, photos.edges, photos.errors, strict=True):
        predicted = coarse >= 128
        assert len(errors) and (predicted[tuple(errors.T)] != mask[tuple(errors.T)].astype(bool)).all()
        # the crop centres lie on the predicted edge, not on the true one
        kernel = np.ones((3, 3), np.uint8)
        predicted_edge = predicted & ~cv2.erode(predicted.astype(np.uint8), kernel).astype(bool)
        true_edge = mask.astype(bool) & ~cv2.erode(mask, kernel).astype(bool)
        assert predicted_edge[tuple(edge.T)].all() and not true_edge[tuple(edge.T)].all()
    hard = EdgeCropDataset(photos, crop=32, length=40, seed=0, hard_fraction=1.0, flip=False, fixed=True)
    for i in range(len(hard)):
        crop = hard[i]
        assert crop["coarse"].shape == crop["mask"].shape == (1, 32, 32)
        assert float(crop["coarse"].min()) >= 0 and float(crop["coarse"].max()) <= 1
        # every hard crop shows some of the coarse model's mistakes
        assert ((crop["coarse"] >= 0.5) != (crop["mask"] >= 0.5)).any()


def test_without_a_coarse_model_crops_follow_the_true_edge(pairs):
    records, _ = pairs
    photos = load_photos(records, "test")
    assert all(c is None for c in photos.coarse) and all(len(e) == 0 for e in photos.errors)
    crops = EdgeCropDataset(photos, crop=32, length=8, seed=0, hard_fraction=1.0)
    crop = crops[0]
    assert "coarse" not in crop and crop["image"].shape == (3, 32, 32)
    assert 0 < float(crop["mask"].mean()) < 1  # the true edge runs through it


@pytest.mark.parametrize(("kwargs", "key"), [({"crop": 30}, "crop=30"), ({"hard_fraction": 2.0}, "hard_fraction=2.0")])
def test_crop_settings_are_checked(pairs, kwargs, key):
    records, _ = pairs
    photos = load_photos(records[:1], "test")
    with pytest.raises(CarsegError, match=f"refiner.data.{key}"):
        EdgeCropDataset(photos, **{"crop": 32, "length": 1, **kwargs})


def test_training_crops_are_the_same_for_the_same_seed(pairs):
    """The refiner's schedule does not depend on the machine: one seed, one sequence of crops."""
    records, truth = pairs
    photos = load_photos(records, "test", lambda im: _shifted(im, truth), band=8)

    def draws(seed):
        crops = EdgeCropDataset(photos, crop=32, length=6, seed=seed, hard_fraction=0.5)
        return [crops[i]["image"] for _ in range(2) for i in range(len(crops))]  # two epochs

    first, again, other = draws(3), draws(3), draws(4)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert any((a != b).any() for a, b in zip(first, other, strict=True))
    assert any((a != b).any() for a, b in zip(first[:6], first[6:], strict=True))  # each epoch new crops


def test_an_epoch_without_a_whole_batch_is_one_clear_error(tiny_data):
    from carseg.data.edge_crops import EdgeCropDataModule

    with pytest.raises(CarsegError, match=r"crops_per_epoch=8, refiner.data.batch_size=16: an epoch needs"):
        EdgeCropDataModule(str(tiny_data), crops_per_epoch=8, batch_size=16)
