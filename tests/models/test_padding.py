"""The one padding rule: which architectures pad, to what, and that the module crops back."""

import pytest
import torch

from carseg.build import build
from carseg.config import model_config
from carseg.models.padding import effective_multiple, pad_to_multiple


@pytest.mark.parametrize(
    "model,pad_always,expected",
    [("unet_resnet18_light", False, 1), ("unet_resnet18_light", True, 32), ("fpn_resnet34", False, 32)],
)
def test_effective_multiple(model, pad_always, expected):
    module = build(model_config(model, [f"model.pad_always={str(pad_always).lower()}"]), "model", _recursive_=False)
    assert module.pad_multiple == effective_multiple(module.net, 32, pad_always) == expected


def test_pad_to_multiple_reflects_then_replicates():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 1, 5, 6).expand(1, 1, 5, 6)
    padded = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (8, 8)
    assert torch.equal(padded[..., :5, :6], x)
    assert torch.equal(padded[..., 5, :6], x[..., 3, :])  # reflected: row 5 mirrors row 3
    tiny = torch.ones(1, 1, 2, 2)
    assert pad_to_multiple(tiny, 8).shape[-2:] == (8, 8)  # too small to reflect: replicated
    assert pad_to_multiple(x, 1) is x
