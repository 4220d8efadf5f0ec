"""ONNX Runtime and the checkpoint see the same pixels: every model config, at a training size that is not a
multiple of 32, gives the same logits and masks both ways."""

import shutil

import numpy as np
import pytest
import torch

from carseg.bench.measure import build_module
from carseg.data.io import read_image
from carseg.inference.export import export_onnx
from carseg.inference.predictor import Predictor
from carseg.models.checkpoint import save_checkpoint
from tests.helpers import CONF

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_"))
TRAINED_AT = [80, 120]  # 120 = 3.75 x 32: U-Net runs it as it is, the others pad to 96 x 128


@pytest.mark.parametrize("model", MODELS)
def test_onnx_matches_the_checkpoint(model, tiny_data, tmp_path):
    torch.manual_seed(0)
    module = build_module(model)
    ckpt = save_checkpoint(module, tmp_path / f"{model}.ckpt", image_size=TRAINED_AT)
    onnx_path = export_onnx(ckpt, tmp_path / f"{model}.onnx")
    images = [read_image(p) for p in sorted((tiny_data / "train").glob("*.jpg"))[:2]]
    torch_path = Predictor(ckpt=ckpt, precision="32")
    onnx = Predictor(onnx=onnx_path)
    assert onnx.pad_multiple == module.pad_multiple and onnx.input_size == TRAINED_AT
    expected, got = torch_path.logits(images).numpy(), onnx.logits(images).numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= 1e-3 * scale
    assert (onnx.masks(images) == torch_path.masks(images)).mean() >= 0.999


@pytest.mark.parametrize(
    "shape", [{"context": True}, {"context": False}, {"context": False, "layers": 3, "mlp": 1, "stem": 4}]
)
def test_onnx_keeps_the_edge_refiner(small_ckpt, sample_full, tmp_path, shape):
    """The refiner is exported beside the model and used by ONNX Runtime: on real full-size photos the refined
    masks agree with the checkpoint's on nearly every pixel, and on nearly every pixel near the edge, where
    the refiner works."""
    from carseg.inference.export import refiner_path
    from carseg.masks import edge_band
    from carseg.models.checkpoint import embed_refiner, load_checkpoint
    from carseg.models.refiner import EdgeRefiner

    torch.manual_seed(0)
    refiner = EdgeRefiner(width=16, residual=True, **shape)
    with torch.no_grad():  # a refiner that changes the edge, as a trained one does
        refiner.head.weight.normal_(0, 0.05)
    module, size = load_checkpoint(small_ckpt)
    ckpt = embed_refiner(save_checkpoint(module, tmp_path / "with_refiner.ckpt", image_size=size), refiner.eval(), 8)
    onnx_path = export_onnx(ckpt, tmp_path / "model.onnx")
    assert refiner_path(onnx_path).is_file()
    images = [read_image(p) for p in sorted((sample_full / "train").glob("*.jpg"))[:2]]
    checkpoint, onnx = Predictor(ckpt=ckpt, precision="32"), Predictor(onnx=onnx_path)
    assert onnx.refiner is not None and onnx.refiner[1] == 8
    unrefined = Predictor(onnx=onnx_path, edge_refiner=False).masks(images)
    expected, got = checkpoint.masks(images), onnx.masks(images)
    assert (expected != unrefined).sum() > 1000  # the refiner does change the edge
    assert (got == expected).mean() >= 0.9999
    near = np.stack([edge_band(m, 4) for m in expected])
    assert (got == expected)[near].mean() >= 0.99


def test_an_onnx_model_whose_refiner_is_missing_says_so(small_ckpt, tmp_path):
    from carseg.errors import CarsegError
    from carseg.inference.export import refiner_path
    from carseg.models.checkpoint import embed_refiner
    from carseg.models.refiner import EdgeRefiner

    shutil.copy(small_ckpt, tmp_path / "a.ckpt")
    ckpt = embed_refiner(tmp_path / "a.ckpt", EdgeRefiner(width=8, residual=True), 4)
    onnx_path = export_onnx(ckpt, tmp_path / "model.onnx")
    refiner_path(onnx_path).unlink()
    with pytest.raises(CarsegError, match=r"model\.refiner\.onnx is missing.*--no-refiner"):
        Predictor(onnx=onnx_path)
    assert Predictor(onnx=onnx_path, edge_refiner=False).refiner is None
