"""Export a checkpoint to ONNX (dynamic batch and size) for ONNX Runtime: the segmentation model and, when
the checkpoint carries one, its edge refiner as a second graph beside it (`<name>.refiner.onnx`, named in
the first one's metadata), so that ONNX Runtime refines the edges as the checkpoint does."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from carseg.errors import CarsegError
from carseg.models.checkpoint import load_checkpoint, load_refiner


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


def refiner_path(model_path: str | Path) -> Path:
    """Where the edge refiner's graph of an exported model lives: `<name>.refiner.onnx` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".refiner.onnx")


def _export(model: nn.Module, example: tuple, out: Path, names: tuple[list[str], list[str]], opset: int, ckpt) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    inputs, outputs = names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(out),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes={name: axes for name in (*inputs, *outputs)},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as err:
        raise CarsegError(f"ONNX export of {ckpt} failed: {type(err).__name__}: {err}") from err


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def export_onnx(ckpt: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write `out` (.onnx) from `ckpt`; the training size, threshold and pad multiple go into its metadata.
    A checkpoint's edge refiner goes to `refiner_path(out)` (image (N, 3, H, W) in 0..255 and coarse
    probabilities (N, 1, H, W), sides multiples of 8 → logits), its file name and band into the metadata."""
    module, trained_size = load_checkpoint(ckpt)
    model = _Exportable(module.net.to(memory_format=torch.contiguous_format), module.mean, module.std).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _export(model, (torch.rand(1, 3, 64, 96) * 255,), out, (["image"], ["logits"]), opset, ckpt)
    meta = {
        "input_size": json.dumps(trained_size),
        "threshold": str(module.hparams.get("threshold", 0.5)),
        "pad_multiple": str(module.pad_multiple),
    }
    refiner = load_refiner(ckpt)
    second = refiner_path(out)
    if refiner is not None:
        net, band = refiner
        example = (torch.rand(2, 3, 64, 64) * 255, torch.rand(2, 1, 64, 64))
        _export(net.eval(), example, second, (["image", "coarse"], ["logits"]), opset, ckpt)
        _add_metadata(second, {"band": str(band)})
        meta.update({"refiner": second.name, "refiner_band": str(band), "alpha_sharpness": str(net.alpha_sharpness)})
    elif second.is_file():
        second.unlink()  # an earlier export's refiner does not belong to this model
    _add_metadata(out, meta)
    return out
