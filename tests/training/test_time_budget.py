"""Training by the clock (TimeBudget), an option for those who want a deadline."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from carseg.errors import CarsegError
from carseg.models.checkpoint import read_checkpoint
from carseg.training import callbacks
from carseg.training.run import train
from tests.helpers import compose_cfg, tiny_overrides


def _cfg(tiny_root, tmp_path, *extra):
    return compose_cfg(
        "train", [*tiny_overrides(tiny_root, tmp_path), "trainer=cpu", "logger=csv", *extra], tmp_path / "run"
    )


class _StepClock:
    """A clock that moves 0.05 s each time it is read (the budget reads it at each step): the run's course
    depends on its steps, not on how busy the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 0.05
        return self.now

    perf_counter = staticmethod(time.perf_counter)


@pytest.mark.slow
def test_a_spent_budget_validates_and_saves_the_last_epoch(tiny_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(callbacks, "time", _StepClock())
    cfg = _cfg(
        tiny_root,
        tmp_path,
        "callbacks=[default,time_budget]",
        "callbacks.time_budget.minutes=0.2",
        "trainer.max_epochs=1000",
        "datamodule.batch_size=2",
        "datamodule.size_schedule=[{time:0,size:[32,48]},{time:0.5,size:[64,96]}]",
        "+trainer.reload_dataloaders_every_n_epochs=1",
    )
    train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["epochs"] < 999 and "time budget of 0.2 min spent" in capsys.readouterr().out
    # the stopped epoch was validated, and it is the epoch last.ckpt holds
    metrics = pd.read_csv(run / "csv" / "metrics.csv")
    last_val_epoch = int(metrics.dropna(subset=["val/iou"])["epoch"].iloc[-1])
    assert last_val_epoch == summary["epoch_times"][-1]["epoch"]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == last_val_epoch
    # both sizes trained, the second after half the budget; the learning rate ended at its floor
    assert [s["size"] for s in summary["stages"]] == ["32x48", "64x96"]
    lrs = metrics["lr-AdamW"].dropna()
    assert lrs.iloc[-1] < 0.1 * lrs.max()


def test_a_time_budget_needs_its_minutes(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path, "callbacks=[default,time_budget]", "callbacks.time_budget.minutes=0")
    with pytest.raises(CarsegError, match="callbacks.time_budget.minutes=0"):
        train(cfg)


def test_the_progress_bar_tells_the_whole_runs_time_left(monkeypatch):
    """Time left = time so far / steps done x steps to go, from the first step; a resumed run counts from its
    own first step."""
    from types import SimpleNamespace

    from carseg.training import callbacks
    from carseg.training.callbacks import RunProgressBar

    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    bar = RunProgressBar()
    trainer = SimpleNamespace(estimated_stepping_batches=400, global_step=100, max_epochs=4, current_epoch=1)
    assert bar.time_left(trainer) is None  # before the run starts
    bar._fit_start, bar._first_step = clock[0], 100  # as on_train_start of a run resumed at step 100
    assert bar.time_left(trainer) is None  # no step yet: nothing to go by
    clock[0] += 30.0
    trainer.global_step = 130  # 30 steps in 30 s: 270 to go
    assert bar.time_left(trainer) == 270.0
    bar._trainer = trainer
    monkeypatch.setattr(RunProgressBar, "trainer", property(lambda self: trainer))
    assert "run 4:30 left" in bar._get_train_description(1)
