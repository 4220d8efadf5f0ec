"""Export a checkpoint to ONNX (dynamic batch and size) for ONNX Runtime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from carseg.errors import CarsegError
from carseg.models.checkpoint import load_checkpoint


class _Exportable(nn.Module):
    """Float image in 0..255 (N, 3, H, W), its sides padded by the model's rule (`pad_multiple` in the
    metadata) → logits (N, 1, H, W)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net((image - self.mean) / self.std)


def export_onnx(ckpt: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write `out` (.onnx) from `ckpt`; the training size, threshold and pad multiple go into its metadata."""
    module, trained_size = load_checkpoint(ckpt)
    model = _Exportable(module.net.to(memory_format=torch.contiguous_format), module.mean, module.std).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, 64, 96) * 255
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(out),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as err:
        raise CarsegError(f"ONNX export of {ckpt} failed: {type(err).__name__}: {err}") from err
    proto = onnx.load(str(out))
    meta = {
        "input_size": json.dumps(trained_size),
        "threshold": str(module.hparams.get("threshold", 0.5)),
        "pad_multiple": str(module.pad_multiple),
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(out))
    return out
