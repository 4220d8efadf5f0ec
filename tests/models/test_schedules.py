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


def test_a_time_budget_moves_the_decay_on():
    """Half the time spent after a tenth of the steps: the rate is the schedule's at half way."""
    clock = {"spent": 0.0}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(opt, 1000, warmup_fraction=0.0, min_lr_ratio=0.0, time_progress=lambda: clock["spent"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    for _ in range(100):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)), abs=1e-3)  # steps lead
    clock["spent"] = 0.5
    opt.step()
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5, abs=1e-6)  # time leads
    clock["spent"] = 1.7  # over budget: the floor, not beyond
    opt.step()
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_a_time_budget_also_ends_the_warmup():
    """A run planned for many epochs but stopped by the clock: its warm-up is a share of the time too."""
    clock = {"spent": 0.0}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(opt, 100_000, warmup_fraction=0.1, min_lr_ratio=0.0, time_progress=lambda: clock["spent"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / 10_000)
    clock["spent"] = 0.05  # half the warm-up's time
    opt.step()
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    clock["spent"] = 0.55  # half of the time after the warm-up
    opt.step()
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
