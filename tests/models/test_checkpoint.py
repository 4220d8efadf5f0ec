"""Checkpoints: one written by an earlier carseg still loads and predicts the same; bad files are named."""

import gzip
import shutil

import numpy as np
import pytest
import torch

from carseg.errors import CarsegError
from carseg.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tests.helpers import ROOT

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def legacy_ckpt(tmp_path):
    """A checkpoint written by carseg 0.1.0 before the package was layered (checkpoint reading then lived in
    carseg.evaluation), of a small U-Net trained two steps at 64x96; with the logits it gave then."""
    out = tmp_path / "legacy.ckpt"
    with gzip.open(FIXTURES / "legacy_unet_mnv3s_64x96.ckpt.gz", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def test_a_checkpoint_from_before_the_move_loads_and_predicts_the_same(legacy_ckpt):
    module, size = load_checkpoint(legacy_ckpt)
    assert size == [64, 96]
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 3, 64, 96), dtype="uint8"))
    with torch.no_grad():
        logits = module.eval()(x)
    expected = np.load(FIXTURES / "legacy_unet_mnv3s_64x96_logits.npy")
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)
    assert module.pad_multiple == 1  # U-Net, pad_always unset: as it ran then


def test_bad_files_are_named(tmp_path, legacy_ckpt):
    with pytest.raises(CarsegError, match="no such file"):
        read_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CarsegError, match=r"junk.ckpt: corrupt or not a checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")
    ckpt = torch.load(legacy_ckpt, weights_only=False)
    del ckpt["hyper_parameters"]["optimizer"]
    torch.save(ckpt, tmp_path / "foreign.ckpt")
    with pytest.raises(CarsegError, match="another model class"):
        load_checkpoint(tmp_path / "foreign.ckpt")


def test_save_then_load_round_trip(legacy_ckpt, tmp_path):
    module, _ = load_checkpoint(legacy_ckpt)
    again, size = load_checkpoint(save_checkpoint(module, tmp_path / "again.ckpt", image_size=[80, 120]))
    assert size == [80, 120]
    x = torch.randint(0, 255, (1, 3, 50, 70), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(module.eval()(x), again.eval()(x))
    _, unknown = load_checkpoint(save_checkpoint(module, tmp_path / "plain.ckpt"))
    assert unknown is None  # no record and no run folder around it
