"""The second stage: the edge refiner trained by steps on the first stage's own full-size outputs, into the
run's checkpoints; `carseg refine` on a finished run; a config that cannot train it stops before stage 1."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from carseg.cli import main as carseg
from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor
from carseg.models.checkpoint import REFINER_KEY, read_checkpoint
from carseg.training.run import train
from tests.helpers import compose_cfg, tiny_overrides

REFINER = [
    "refiner=edge",
    "refiner.data.crop=64",
    "refiner.data.batch_size=4",
    "refiner.data.crops_per_epoch=16",
    "refiner.data.val_crops=8",
    "refiner.data.val_photos=4",
    "refiner.module.width=8",
    "refiner.max_steps=6",
]


def _cfg(tiny_root, tmp_path, *extra):
    return compose_cfg(
        "train", [*tiny_overrides(tiny_root, tmp_path), "trainer=cpu", "logger=csv", *extra], tmp_path / "run"
    )


@pytest.mark.slow
def test_the_edge_refiner_is_trained_into_the_checkpoints(tiny_root, tiny_data, tmp_path):
    cfg = _cfg(
        tiny_root,
        tmp_path,
        "trainer.max_epochs=1",
        *REFINER,
        f"refiner.data.data_dir={tiny_data}",
        f"refiner.data.val_dir={tiny_data}",
    )
    train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    refiner = summary["refiner"]
    # exactly its steps, on the first stage's own probabilities
    assert refiner["global_step"] == 6 and refiner["coarse"] == "model" and 0 <= refiner["refiner/val_iou"] <= 1
    assert sorted(refiner["checkpoints"]) == sorted(
        {summary["best_checkpoint"], str(run / "checkpoints" / "last.ckpt")}
    )
    for path in refiner["checkpoints"]:
        entry = read_checkpoint(path)[REFINER_KEY]
        assert entry["width"] == 8 and entry["residual"] is True
    predictor = Predictor(ckpt=summary["best_checkpoint"], precision="32")
    assert predictor.refiner is not None
    image = torch.randint(0, 255, (96, 144, 3), dtype=torch.uint8).numpy()
    assert predictor.masks([image]).shape == (1, 96, 144)
    assert (run / "refiner" / "metrics.csv").is_file()


@pytest.mark.slow
def test_carseg_refine_trains_the_refiner_of_a_finished_run(trained, tiny_data, tmp_path, capsys):
    run = tmp_path / "r1"
    shutil.copytree(trained[0], run)  # the shared run stays without a refiner
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- trainer=cpu\n- logger=csv\n")
    before = json.loads((run / "summary.json").read_text())
    carseg(
        [
            "refine",
            str(run),
            *REFINER,
            f"refiner.data.data_dir={tiny_data}",
            f"refiner.data.val_dir={tiny_data}",
            f"paths.root_dir={tmp_path}",
            "refiner.coarse=simulated",
        ]
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"] == before["best"] and summary["refiner"]["coarse"] == "simulated"
    assert summary["refiner"]["global_step"] == 6
    assert REFINER_KEY in read_checkpoint(run / "checkpoints" / "last.ckpt")
    # into this folder's checkpoints, though its summary names where the run was first written
    written = summary["refiner"]["checkpoints"]
    assert len(written) == 2 and all(str(run) in path for path in written)
    original_best = next((trained[0] / "checkpoints").glob("epoch_*.ckpt"))
    assert REFINER_KEY not in read_checkpoint(original_best)
    assert "edge refiner written into 2 checkpoint(s)" in capsys.readouterr().out


def test_carseg_refine_needs_a_finished_run(tmp_path):
    with pytest.raises(CarsegError, match=r"summary\.json: missing; give the folder of a finished training run"):
        from carseg.training.run import refine_run

        refine_run(tmp_path)


def test_missing_refiner_data_stops_before_training(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path, "refiner=edge", f"refiner.data.data_dir={tmp_path}/nowhere")
    with pytest.raises(CarsegError, match=r"refiner.data.data_dir=.*nowhere: no such folder.*refiner=none"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("refiner.max_steps=0", r"refiner.max_steps=0: give the refiner's training steps"),
        ("refiner.max_steps=1.5", r"refiner.max_steps=1.5: give the refiner's training steps"),
        ("refiner.minutes=-1", r"refiner.minutes=-1: give a deadline in minutes"),
        ("refiner.coarse=guess", r"refiner.coarse=guess: give one of model, simulated"),
        ("refiner.module.context=no", r"refiner.module.context='no': give true or false"),
        ("refiner.module.simulated_fraction=2", r"refiner.module.simulated_fraction=2: give a share"),
        ("+refiner.module.contxt=false", r"refiner.module: .*'contxt'; see conf/refiner/edge.yaml"),
    ],
)
def test_a_refiner_schedule_that_cannot_run_stops_before_training(tiny_root, tiny_data, tmp_path, override, message):
    extra = [f"refiner.data.data_dir={tiny_data}", f"refiner.data.val_dir={tiny_data}"]
    cfg = _cfg(tiny_root, tmp_path, "refiner=edge", *extra, override)
    with pytest.raises(CarsegError, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_carseg_refine_with_an_override_that_does_not_fit_is_one_clear_error(trained, tmp_path):
    from carseg.training.run import refine_run

    run = tmp_path / "r1"
    shutil.copytree(trained[0], run)
    with pytest.raises(CarsegError, match=r"the overrides do not fit the config .*refiner\.module\.no_such_key"):
        refine_run(run, ["refiner=edge", "refiner.module.no_such_key=1"])
