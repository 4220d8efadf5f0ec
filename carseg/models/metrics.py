"""Training metrics that keep the GPU busy (no host sync per step): IoU from summed true/false positives, and
the boundary F1 of the full-size evaluation, at the training resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import BinaryStatScores


class BinaryIoU(BinaryStatScores):
    """The Jaccard index (IoU) of boolean predictions over everything seen since the last reset.

    The same value as torchmetrics' BinaryJaccardIndex (0 where the union is empty), but counted as stat
    scores: BinaryJaccardIndex counts with `torch.bincount`, which waits for the GPU at every update.
    """

    def __init__(self) -> None:
        super().__init__(multidim_average="global", validate_args=False)

    def compute(self) -> torch.Tensor:
        tp, fp, _, fn = self._final_state()
        union = tp + fp + fn
        return torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(union, dtype=torch.float)).float()


def _disk(radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]


def _inner_boundary(mask: torch.Tensor) -> torch.Tensor:
    """One-pixel inner boundary of (N, 1, H, W) 0/1 float masks (the image border counts as inside)."""
    eroded = 1 - F.max_pool2d(F.pad(1 - mask, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return mask * (1 - eroded)


class BoundaryF1(Metric):
    """Mean over images of the boundary F1: boundary pixels of prediction and truth that lie within
    `tolerance` pixels of the other's boundary (1 where both masks are empty, 0 where one is). The same
    definition as the full-size evaluation's, here at the training resolution and on the device."""

    full_state_update = False

    def __init__(self, tolerance: int = 2) -> None:
        super().__init__()
        self.tolerance = int(tolerance)
        self.register_buffer("kernel", _disk(self.tolerance), persistent=False)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        p, t = pred.reshape(-1, 1, *pred.shape[-2:]).float(), target.reshape(-1, 1, *target.shape[-2:]).float()
        bp, bt = _inner_boundary(p), _inner_boundary(t)
        pad = self.tolerance
        near_t = F.conv2d(bt, self.kernel.to(bt), padding=pad) > 0
        near_p = F.conv2d(bp, self.kernel.to(bp), padding=pad) > 0
        np_, nt = bp.sum((1, 2, 3)), bt.sum((1, 2, 3))
        precision = (bp * near_t).sum((1, 2, 3)) / np_.clamp(min=1)
        recall = (bt * near_p).sum((1, 2, 3)) / nt.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        f1 = torch.where((np_ == 0) & (nt == 0), torch.ones_like(f1), torch.where((np_ == 0) | (nt == 0), 0 * f1, f1))
        self.total += f1.sum()
        self.count += f1.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)
