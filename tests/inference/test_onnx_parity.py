"""ONNX Runtime and the checkpoint see the same pixels: every model config, at a training size that is not a
multiple of 32, gives the same logits and masks both ways."""

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
