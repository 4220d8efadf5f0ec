"""Training metrics that keep the GPU busy: IoU from summed true/false positives, with no host sync per step."""

from __future__ import annotations

import torch
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
