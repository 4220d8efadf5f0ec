"""Learning-rate schedules that need the run's total number of steps (or its time budget)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.03,
    min_lr_ratio: float = 0.01,
    time_progress: Callable[[], float] | None = None,
) -> LambdaLR:
    """Linear warm-up over `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio` × lr.

    With `time_progress` (the share of a time budget spent, 0..1), warm-up and decay follow whichever is
    further along, steps or time: a run stopped by its time budget ends at the low end of the schedule."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        spent = min(1.0, time_progress()) if time_progress is not None else 0.0
        if step < warmup and spent < warmup_fraction:
            return max((step + 1) / warmup, spent / warmup_fraction)
        progress = min(1.0, max(0, step - warmup) / max(1, total_steps - warmup))
        if time_progress is not None:
            progress = max(progress, (spent - warmup_fraction) / (1 - warmup_fraction))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def time_progress_of(trainer: object) -> Callable[[], float] | None:
    """The time-budget clock of a trainer's callbacks (a callback with a `time_progress` method), if any."""
    for callback in getattr(trainer, "callbacks", None) or []:
        clock = getattr(callback, "time_progress", None)
        if callable(clock):
            return clock
    return None
