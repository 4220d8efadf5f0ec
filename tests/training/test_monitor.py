"""One monitored metric: `optimized_metric` + `optimized_mode` drive checkpoints, early stopping, the value
returned to sweepers, Optuna's direction and the sweep summary's order."""

import re

import pandas as pd
import pytest
import yaml
from hydra.utils import instantiate

from carseg import runs
from carseg.errors import CarsegError
from carseg.training.run import _check_callbacks, monitored
from carseg.training.sweep import ranked
from tests.helpers import compose_cfg, optuna_overrides, run_script


def _cfg(tmp_path, *overrides):
    return compose_cfg("train", [f"paths.root_dir={tmp_path}", *overrides], tmp_path / "run")


def test_callbacks_follow_the_monitored_metric(tmp_path):
    cfg = _cfg(tmp_path, "callbacks=early_stopping", "optimized_metric=val/loss", "optimized_mode=min")
    assert monitored(cfg) == ("val/loss", "min")
    for key in ("model_checkpoint", "early_stopping"):
        callback = instantiate(cfg.callbacks[key])
        assert (callback.monitor, callback.mode) == ("val/loss", "min")
    cfg = _cfg(tmp_path, "callbacks=early_stopping")
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == ("val/iou", "max")


def test_a_callback_that_monitors_something_else_is_an_error(tmp_path):
    cfg = _cfg(tmp_path, "callbacks.model_checkpoint.monitor=val/dice")
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if "_target_" in c]
    with pytest.raises(CarsegError, match=r"callbacks.model_checkpoint monitors val/dice .* optimized_metric=val/iou"):
        _check_callbacks(callbacks, *monitored(cfg))


@pytest.mark.parametrize(
    "override,match",
    [("optimized_metric=val/iuo", "optimized_metric='val/iuo' is not logged"), ("optimized_mode=up", "max .* min")],
)
def test_bad_monitor_settings_are_named(tmp_path, override, match):
    with pytest.raises(CarsegError, match=match):
        monitored(_cfg(tmp_path, override))


def test_optuna_direction_follows_the_mode(tmp_path):
    for mode, direction in (("max", "maximize"), ("min", "minimize")):
        cfg = compose_cfg(
            "train",
            ["hparams_search=optuna", f"optimized_mode={mode}", f"paths.root_dir={tmp_path}"],
            None,
            keep_hydra=True,
        )
        assert cfg.hydra.sweeper.direction == direction and cfg.hydra.mode.name == "MULTIRUN"


def test_sweep_summary_ranks_by_mode():
    rows = [{"job": str(i), "best": b} for i, b in enumerate([0.3, None, 0.1, 0.2])]
    assert [r["job"] for r in ranked(rows, "min")] == ["2", "3", "0", "1"]
    assert [r["job"] for r in ranked(rows, "max")] == ["0", "3", "2", "1"]


@pytest.mark.slow
def test_val_loss_minimised_end_to_end(tiny_root, tmp_path):
    """An Optuna sweep minimising val/loss: checkpoints, early stopping, returned values, summary order."""
    result = run_script(
        "train.py",
        [
            *optuna_overrides(tiny_root, tmp_path),
            "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(1e-5, 1e-2))'}",
            "optimized_metric=val/loss",
            "optimized_mode=min",
            "callbacks=early_stopping",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=2",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    sweep = tmp_path / "logs" / "train" / "optuna" / "carseg"
    bests = {}
    for job in (p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        summary = runs.read_summary(job)
        losses = pd.read_csv(job / runs.METRICS_CSV).dropna(subset=["val/loss"])
        assert (summary["monitor"], summary["mode"]) == ("val/loss", "min")
        assert summary["best"] == pytest.approx(losses["val/loss"].min())  # the lowest, not the highest
        best_epoch = int(losses.loc[losses["val/loss"].idxmin(), "epoch"])
        assert re.search(rf"epoch_{best_epoch:03d}-", summary["best_checkpoint"])
        bests[job.name] = summary["best"]
    assert len(bests) == 2
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna["best_value"] == pytest.approx(min(bests.values()))  # Optuna got each job's value, minimised
    table = pd.read_csv(sweep / "sweep_summary.csv")
    assert table["best"].tolist() == sorted(bests.values())
    order = sorted(bests, key=bests.get)
    assert "ranked by best val/loss (min)" in result.stdout
    table_text = result.stdout.split("ranked by best val/loss (min)", 1)[1]
    assert re.findall(r"^│\s+(\d+)\s+│", table_text, re.M) == order  # the printed table, best first
