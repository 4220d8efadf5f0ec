"""Segmentation losses from segmentation-models-pytorch, combined, with an optional heavier weight on the
pixels near the car's edge (as the Carvana winners weighed their BCE)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss, SoftBCEWithLogitsLoss

from carseg.masks import edge_weights as weights_near_edge


def edge_weights(target: torch.Tensor, weight: float, band: float) -> torch.Tensor:
    """Per-pixel weights (N, 1, H, W): `weight` within the edge band of the (thresholded) target, 1 elsewhere.
    The band's half-width is `band` × the image's width, in pixels at least 1 (0.01: about 20 px of a
    1918-wide photo, 5 px at 480, 2 px at 240), so that it covers the same part of the car at every size of
    a progressive schedule."""
    return weights_near_edge(target >= 0.5, weight, max(1, math.ceil(band * target.shape[-1])))


class CombinedLoss(nn.Module):
    """Weighted sum of BCE, Dice and Lovász-hinge losses on binary logits (weights of 0 skip a term).

    Targets may be soft (a pixel's car share, 0..1): BCE and Dice take them as they are, Lovász-hinge
    (defined for 0/1 labels) takes them thresholded at 0.5. With `edge_weight` > 1, BCE is a weighted mean in
    which the pixels within `edge_band` (a share of the image's width) of the true edge count `edge_weight`
    times (`edge_weights`); 1 keeps the plain mean.
    """

    def __init__(
        self,
        bce: float = 1.0,
        dice: float = 1.0,
        lovasz: float = 0.0,
        edge_weight: float = 1.0,
        edge_band: float = 0.01,
    ):
        super().__init__()
        if edge_weight < 1:
            raise ValueError(f"model.loss.edge_weight={edge_weight}: give a weight >= 1 (1: every pixel alike)")
        if not 0 < edge_band < 0.5:
            raise ValueError(f"model.loss.edge_band={edge_band}: give a share of the image's width in (0, 0.5)")
        self.edge_weight, self.edge_band = float(edge_weight), float(edge_band)
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        bce_reduction = "none" if self.edge_weight > 1 else "mean"
        for name, weight, loss in (
            ("bce", bce, lambda: SoftBCEWithLogitsLoss(reduction=bce_reduction)),
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
        total = logits.new_zeros(())
        for name, term in self.terms.items():
            value = term(logits, hard.to(logits.dtype) if name == "lovasz" else target)
            if name == "bce" and self.edge_weight > 1:
                w = edge_weights(target, self.edge_weight, self.edge_band)
                value = (value * w).sum() / w.sum()
            total = total + self.weights[name] * value
        return total
