"""The learned edge refiner at prediction: only the band around the edge changes, every band pixel is
covered whatever the photo's size, and the Predictor uses the refiner a checkpoint carries."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor
from carseg.inference.refine import refine_edges
from carseg.models.checkpoint import embed_refiner
from carseg.models.refiner import EdgeRefiner


class _Constant(nn.Module):
    """A refiner double that answers `value` everywhere, to see exactly which pixels were refined."""

    def __init__(self, value: float):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return torch.full_like(coarse, float(self.value))


@pytest.mark.parametrize("shape", [(150, 230), (64, 64), (40, 300)])
def test_only_and_all_of_the_band_is_refined(shape):
    h, w = shape
    logits = torch.full((1, h, w), -8.0)
    logits[0, h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = 8.0
    image = np.zeros((h, w, 3), np.uint8)
    out = refine_edges(_Constant(3.0), [image], logits, band=5, tile=32, margin=8)
    changed = out[0] != logits[0]
    mask = (logits[0] > 0).float()[None, None]
    band = (torch.nn.functional.max_pool2d(mask, 11, 1, 5) != -torch.nn.functional.max_pool2d(-mask, 11, 1, 5))[0, 0]
    assert torch.equal(changed, band)
    assert torch.all(out[0][band] == 3.0)


def test_the_threshold_is_kept():
    """A model thresholded at 0.7: the refiner answers around its own 0.5, shifted back to the model's."""
    logits = torch.full((1, 40, 40), -8.0)
    logits[0, 10:30, 10:30] = 8.0
    out = refine_edges(_Constant(0.0), [np.zeros((40, 40, 3), np.uint8)], logits, band=2, threshold=0.85, tile=16)
    assert torch.allclose(out[0][out[0] != logits[0]], torch.tensor(0.85))


def test_no_edge_no_work():
    logits = torch.full((1, 30, 30), -5.0)
    assert torch.equal(refine_edges(_Constant(9.0), [np.zeros((30, 30, 3), np.uint8)], logits, band=4), logits)


def test_predictor_uses_the_checkpoints_refiner(small_ckpt, tmp_path):
    path = tmp_path / "refined.ckpt"
    path.write_bytes(small_ckpt.read_bytes())
    torch.manual_seed(0)
    embed_refiner(path, EdgeRefiner(width=8), band=6)
    image = np.random.default_rng(0).integers(0, 255, (96, 144, 3), dtype=np.uint8)
    image[20:70, 30:110] = 200
    plain = Predictor(ckpt=small_ckpt, precision="32")
    refined = Predictor(ckpt=path, precision="32")
    off = Predictor(ckpt=path, precision="32", edge_refiner=False)
    assert plain.refiner is None and refined.refiner is not None and off.refiner is None
    base, new = plain.logits([image]), refined.logits([image])
    assert torch.equal(off.logits([image]), base)
    mask = (base[0] > 0).numpy().astype(np.uint8)
    assert mask.any() and not mask.all()  # the model sees a car edge here
    assert not torch.equal(new, base)
    kernel = np.ones((13, 13), np.uint8)
    band = torch.from_numpy(cv2.dilate(mask, kernel) != cv2.erode(mask, kernel))
    assert torch.equal(new[0][~band], base[0][~band])


class _Columns(nn.Module):
    """A refiner double that answers each pixel's column within its tile (0, 1, 2, ...): its mirror image's
    answer, flipped back, is (width - 1 - column), so flip TTA averages the two to (width - 1) / 2."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        w = coarse.shape[-1]
        return torch.arange(w, dtype=torch.float32).expand_as(coarse).clone()


class _Pointwise(nn.Module):
    """A mirror-symmetric refiner double: its answer at a pixel depends on that pixel alone."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return torch.logit(coarse.clamp(1e-4, 1 - 1e-4)) + image.float().mean(1, keepdim=True) / 255


def _square(h: int = 60, w: int = 90) -> torch.Tensor:
    logits = torch.full((1, h, w), -8.0)
    logits[0, 15:45, 20:70] = 8.0
    return logits


def test_edge_flip_tta_averages_each_tile_with_its_mirror():
    logits = _square()
    image = np.zeros((60, 90, 3), np.uint8)
    plain = refine_edges(_Columns(), [image], logits, band=3, tile=32, margin=8)
    flipped = refine_edges(_Columns(), [image], logits, band=3, tile=32, margin=8, flip=True)
    refined = flipped[0] != logits[0]
    assert refined.any()
    size = 32 + 2 * 8
    assert torch.allclose(flipped[0][refined], torch.tensor((size - 1) / 2))
    assert not torch.allclose(plain[0][refined], torch.tensor((size - 1) / 2))  # one pass alone: not symmetric


def test_a_mirror_symmetric_refiner_gives_the_same_edge_with_flip_tta():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    logits = _square() + torch.from_numpy(rng.normal(0, 1, (1, 60, 90)).astype(np.float32))
    plain = refine_edges(_Pointwise(), [image], logits, band=4, tile=32, margin=8)
    flipped = refine_edges(_Pointwise(), [image], logits, band=4, tile=32, margin=8, flip=True)
    assert not torch.equal(plain, logits)
    assert torch.allclose(plain, flipped, atol=1e-5)


def test_no_edge_no_work_with_flip_tta():
    logits = torch.full((2, 30, 30), -5.0)
    images = [np.zeros((30, 30, 3), np.uint8)] * 2
    assert torch.equal(refine_edges(_Columns(), images, logits, band=4, flip=True), logits)


def test_predictor_edge_tta_follows_tta_unless_told(small_ckpt, tmp_path):
    path = tmp_path / "refined.ckpt"
    path.write_bytes(small_ckpt.read_bytes())
    torch.manual_seed(0)
    embed_refiner(path, EdgeRefiner(width=8, context=False), band=6)  # random: not mirror-symmetric
    image = np.random.default_rng(0).integers(0, 255, (96, 144, 3), dtype=np.uint8)
    image[20:70, 30:110] = 200
    assert Predictor(ckpt=path, precision="32", tta=True).edge_tta is True
    assert Predictor(ckpt=path, precision="32").edge_tta is False
    assert Predictor(ckpt=path, precision="32", tta=True, edge_tta=False).edge_tta is False
    with pytest.raises(CarsegError, match="edge_tta"):
        Predictor(ckpt=path, precision="32", edge_tta="yes")
    both = Predictor(ckpt=path, precision="32", tta=True)
    once = Predictor(ckpt=path, precision="32", tta=True, edge_tta=False)
    a, b = both.logits([image]), once.logits([image])
    assert not torch.equal(a, b)
    outside = a[0] == b[0]
    assert outside.any()  # away from the edge both keep the coarse logits
