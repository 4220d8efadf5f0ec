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


class _RunsCode:
    """An object whose unpickling would run a command: what a hostile checkpoint carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_is_data_not_code(tmp_path, legacy_ckpt):
    marker = tmp_path / "ran"
    ckpt = torch.load(legacy_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["payload"] = _RunsCode(marker)
    torch.save(ckpt, tmp_path / "hostile.ckpt")
    with pytest.raises(CarsegError, match=r"hostile\.ckpt: holds Python objects beyond weights .*re-save it"):
        load_checkpoint(tmp_path / "hostile.ckpt")
    assert not marker.exists()  # nothing it carried ran


def test_random_bytes_are_always_the_one_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.ckpt"
    for i in range(300):
        # some start as a zip or a pickle, as the damaged files that reach deeper into the unpickler do
        head = [b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95"][i % 4]
        path.write_bytes(head + rng.bytes(4096))
        with pytest.raises(CarsegError, match=r"noise\.ckpt: "):
            read_checkpoint(path)
