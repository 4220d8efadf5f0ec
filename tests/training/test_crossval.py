"""Cross-validation by car in one command (`cv=kfold`): folds, cv_summary, W&B group, and the folds' ensemble."""

import json
import statistics

import numpy as np
import pandas as pd
import pytest

from carseg import runs
from carseg.build import build
from carseg.cli import main as carseg_main
from carseg.data.io import read_image
from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor
from carseg.training.crossval import cv_summary, fold_of
from tests.helpers import TINY, compose_cfg, run_script, tiny_overrides, wandb_records


def test_folds_are_read_from_the_overrides_and_summarised():
    rows = [
        {"job": "0", "overrides": "datamodule.fold=0 seed=1", "best": 0.9, "best_checkpoint": "a.ckpt"},
        {"job": "1", "overrides": "seed=1 datamodule.fold=1", "best": 0.8, "best_checkpoint": "b.ckpt"},
        {"job": "2", "overrides": "datamodule.fold=2", "best": None, "best_checkpoint": None},
    ]
    assert [fold_of(r["overrides"]) for r in rows] == [0, 1, 2] and fold_of("datamodule.folds=3") is None
    summary = cv_summary(rows, "val/iou", "max")
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2] and summary["finished"] == 2
    assert summary["mean"] == pytest.approx(0.85) and summary["std"] == pytest.approx(statistics.stdev([0.9, 0.8]))
    assert cv_summary([{"job": "0", "overrides": "model.optimizer.lr=1", "best": 1.0}], "val/iou", "max") is None


def test_cv_composes_with_the_launchers(tmp_path):
    for launcher, target in (("submitit_slurm", "SlurmLauncher"), ("joblib", "JoblibLauncher")):
        cfg = compose_cfg(
            "train",
            ["cv=kfold", "datamodule.num_folds=3", f"hydra/launcher={launcher}", f"paths.root_dir={tmp_path}"],
            None,
            keep_hydra=True,
        )
        assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.launcher._target_.endswith(target)
        assert cfg.hydra.sweeper.params["datamodule.fold"] == "range(3)"


def test_checkpoints_in_names_what_it_cannot_use(tmp_path):
    with pytest.raises(CarsegError, match=r"--ckpt .*neither a checkpoint file"):
        runs.checkpoints_in([tmp_path])


@pytest.mark.slow
def test_cross_validation_by_car_in_one_command(tiny_root, tiny_data, tmp_path):
    sweep = tmp_path / "cv"
    result = run_script(
        "train.py",
        [
            *tiny_overrides(tiny_root, tmp_path),
            "cv=kfold",
            "datamodule.num_folds=2",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=3",
            f"hydra.sweep.dir={sweep}",
        ],
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = json.loads((sweep / runs.CV_SUMMARY).read_text())
    bests = [f["best"] for f in summary["folds"]]
    assert [f["fold"] for f in summary["folds"]] == [0, 1] and all(b is not None for b in bests)
    assert summary["mean"] == pytest.approx(statistics.fmean(bests))
    assert summary["std"] == pytest.approx(statistics.stdev(bests))
    assert pd.read_csv(sweep / runs.CV_SUMMARY_CSV)["best"].tolist() == pytest.approx(bests)
    assert "Cross-validation by car: 2 folds" in result.stdout and "mean ± std" in result.stdout

    all_cars, validated = set(), []
    for fold in summary["folds"]:
        job = sweep / fold["job"]
        dm = build(runs.run_config(job).datamodule, "datamodule", _convert_="all")
        dm.setup("fit")
        train_cars = {r.car_id for r in dm.train_set.records}
        val_cars = {r.car_id for r in dm.val_set.records}
        assert train_cars.isdisjoint(val_cars)  # no car on both sides of a fold
        all_cars |= train_cars | val_cars
        validated += sorted(val_cars)
        (wandb_dir,) = list((job / "wandb").glob("offline-run-*"))
        run = next(
            r.run for r in wandb_records(next(wandb_dir.glob("*.wandb"))) if r.WhichOneof("record_type") == "run"
        )
        assert run.run_group == "cv" and run.display_name == f"cv-fold{fold['fold']}" and "cv" in run.tags
    assert len(all_cars) == TINY["num_cars"] and sorted(validated) == sorted(all_cars)  # each car validated once

    # the folds' ensemble, in one command
    photos = sorted((tiny_data / "train").glob("*.jpg"))[:2]
    carseg_main(["predict", *map(str, photos), "--ckpt", str(sweep), "--out", str(tmp_path / "out"), "--quiet"])
    assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == sorted(f"{p.stem}_mask.png" for p in photos)
    folds = runs.fold_checkpoints(sweep)
    images = [read_image(p) for p in photos]
    members = [Predictor(ckpt=c, precision="32").probabilities(images) for c in folds]
    ensemble = Predictor(ckpt=folds, precision="32").probabilities(images)
    assert len(folds) == 2 and np.allclose(ensemble, np.mean(members, axis=0), atol=1e-5)  # probabilities averaged
    assert not np.array_equal(members[0], members[1])  # two different models were averaged
