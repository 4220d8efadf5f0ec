"""The warm-up + cosine learning-rate schedule."""

import math

import pytest
import torch

from carseg.models.schedules import warmup_cosine


def _lrs(total: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(opt, total, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return lrs


def test_linear_warmup_then_cosine_to_the_floor():
    lrs = _lrs(100, warmup_fraction=0.1, min_lr_ratio=0.01)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0)  # the peak is the configured lr
    middle = 10 + 45
    assert lrs[middle] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # never rises after the peak
    assert lrs[-1] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert min(lrs) >= 0.01


def test_at_least_one_warmup_step():
    lrs = _lrs(10, warmup_fraction=0.0)
    assert lrs[0] == pytest.approx(1.0)
