"""A segmentation model's logits at each image's own size: the image resized to the size the model was
trained at (when it has one), optionally averaged with its mirror image (flip TTA), and the logits upsampled
back. The one definition used by prediction (`carseg.inference.predictor`) and by the edge refiner's
training on the coarse model's own outputs (`carseg.training.refinement`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F


def model_size(size: Sequence[int] | None, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The size the network sees for an image of `shape`: the training size, or None (native) when unset or
    equal to `shape`."""
    if size is None or tuple(size) == tuple(shape):
        return None
    return int(size[0]), int(size[1])


def full_size_logits(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    full: torch.Tensor,
    input_size: Sequence[int] | None,
    tta: bool = False,
    disagreement: list[float] | None = None,
    threshold: float = 0.0,
    shift: list[float] | None = None,
) -> torch.Tensor:
    """Logits (N, 1, H, W) at the size of `full`, a batch in 0..255 (N, 3, H, W), uint8 or float.

    `logits_of` maps a float batch at the model's size to its logits (N, 1, h, w) on the CPU. With
    `disagreement` (a list) the mirror image is predicted too (also without `tta`), and each image's count of
    pixels where the two masks (logit > `threshold`) differ, scaled to its own size, is appended; to `shift`
    (a list; the mirror image is predicted for it too) the sum over its pixels of how far the two
    probabilities differ, so scaled: divided by the edge's pixels, how many pixels the two edges lie apart,
    shifts under a pixel of the model's size included. A uint8 batch is resized as uint8 (antialiased,
    rounded to whole levels) and only the result becomes float, so a large
    photo costs its bytes, not four times them."""
    shape = tuple(full.shape[-2:])
    size = model_size(input_size, shape)
    x = full if size is None else F.interpolate(full, size=size, mode="bilinear", antialias=True, align_corners=False)
    x = x.float()
    out = logits_of(x)
    if tta or disagreement is not None or shift is not None:
        mirrored = logits_of(x.flip(-1)).flip(-1)
        scale = shape[0] * shape[1] / (x.shape[-2] * x.shape[-1])
        if shift is not None:
            apart = ((out - threshold).sigmoid() - (mirrored - threshold).sigmoid()).abs().flatten(1).sum(1)
            shift.extend(float(d) * scale for d in apart)
        if disagreement is not None:  # per image: pixels (at the image's size) where the two masks differ
            differ = ((out > threshold) != (mirrored > threshold)).flatten(1).sum(1)
            disagreement.extend(float(d) * scale for d in differ)
        if tta:
            out = (out + mirrored) / 2
    if size is not None:
        out = F.interpolate(out, size=shape, mode="bilinear", align_corners=False)
    return out


def module_logits(
    module: torch.nn.Module, device: torch.device | str, autocast: Callable[[], Any] = nullcontext
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`logits_of` for a SegmentationModule on `device`: inference mode, `autocast`, float32 logits back on
    the CPU."""

    def logits_of(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return module(batch.to(device)).float().cpu()

    return logits_of
