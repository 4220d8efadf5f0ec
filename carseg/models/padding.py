"""The padding rule, in one place: which input sizes a network takes, and how an image is padded to one.

FPN, DeepLabV3+ and most architectures need sides that are multiples of 32 (their `pad_multiple`); U-Net
takes any size. `pad_always` pads even then (1918 -> 1920 at full resolution). The checkpoint path
(`SegmentationModule.forward`) and the ONNX path (`Predictor`, from the model's metadata) both pad by
`effective_multiple` with `pad_to_multiple`, so that they see the same pixels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_MULTIPLE = 32


def effective_multiple(net: nn.Module, pad_multiple: int = DEFAULT_MULTIPLE, pad_always: bool = False) -> int:
    """The multiple the sides of `net`'s input are padded to: `pad_multiple` where the architecture needs
    it or `pad_always` asks for it, else 1 (no padding)."""
    needs_pad = getattr(net, "requires_divisible_input_shape", True) or pad_always
    return int(pad_multiple) if needs_pad else 1


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right of (N, C, H, W) to multiples of `multiple` (reflecting where the image is
    large enough, else replicating the border)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
