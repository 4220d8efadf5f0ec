"""Segmentation losses from segmentation-models-pytorch, combined."""

from __future__ import annotations

import torch
import torch.nn as nn
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss, SoftBCEWithLogitsLoss


class CombinedLoss(nn.Module):
    """Weighted sum of BCE, Dice and Lovász-hinge losses on binary logits (weights of 0 skip a term).

    Targets may be soft (a pixel's car share, 0..1): BCE and Dice take them as they are, Lovász-hinge
    (defined for 0/1 labels) takes them thresholded at 0.5.
    """

    def __init__(self, bce: float = 1.0, dice: float = 1.0, lovasz: float = 0.0):
        super().__init__()
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, weight, loss in (
            ("bce", bce, SoftBCEWithLogitsLoss),
            ("dice", dice, lambda: DiceLoss(mode="binary", from_logits=True)),
            ("lovasz", lovasz, lambda: LovaszLoss(mode="binary", per_image=True, from_logits=True)),
        ):
            if weight:
                self.terms[name] = loss()
                self.weights[name] = float(weight)
        if not self.terms:
            raise ValueError("model.loss: at least one of bce, dice, lovasz needs a non-zero weight")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        hard = target >= 0.5
        return sum(
            self.weights[name] * term(logits, hard.to(logits.dtype) if name == "lovasz" else target)
            for name, term in self.terms.items()
        )
