"""Real (short) training runs on the tiny synthetic set: in-process, DDP on CPU, multirun, errors."""

import json
from pathlib import Path

import pandas as pd
import pytest

from carseg.runs import run_config
from tests.helpers import run_script, tiny_overrides, wandb_history

pytestmark = pytest.mark.slow


def test_training_learns(trained):
    run_dir, best = trained
    assert best is not None and best > 0.85, f"val/iou only reached {best}"
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    ious = metrics["val/iou"].dropna().tolist()
    assert len(ious) == 6 and max(ious) > ious[0] + 0.02, f"val/iou did not rise: {ious}"
    assert metrics["train/loss_epoch"].dropna().iloc[-1] < metrics["train/loss_epoch"].dropna().iloc[0]


def test_outputs_stay_in_the_run_dir(trained):
    run_dir, best = trained
    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("epoch_") for n in ckpts)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"] == pytest.approx(best) and Path(summary["best_checkpoint"]).parent == run_dir / "checkpoints"
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png"))[-1] == "epoch_005.png"
    # the wall time of every epoch and of the one training size (a stage)
    assert [e["epoch"] for e in summary["epoch_times"]] == list(range(6))
    (stage,) = summary["stages"]
    assert stage["size"] == "64x96" and stage["epochs"] == 6 and 0 < stage["seconds"] <= summary["wall_seconds"]


def test_wandb_offline_run_holds_val_iou_and_config(trained):
    run_dir, best = trained
    (wandb_run,) = list((run_dir / "wandb").glob("offline-run-*"))
    history = wandb_history(wandb_run, "val/iou")
    assert len(history) == 6 and max(history) == pytest.approx(best, abs=1e-6)
    assert wandb_history(wandb_run, "val/samples/count") == [4] * 6  # sample images each validation epoch
    raw = next(wandb_run.glob("*.wandb")).read_bytes()
    assert b"unet_resnet18" in raw or b"resnet18" in raw  # the config went with the run


def test_ddp_on_two_cpu_processes(tiny_root, tmp_path):
    result = run_script(
        "train.py",
        [
            *tiny_overrides(tiny_root, tmp_path),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path}/run",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert "MEMBER: 2/2" in text, text[-2000:]
    assert len(list((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))) == 1
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1  # only rank 0 logs


def test_multirun_two_jobs(tiny_root, tmp_path):
    result = run_script(
        "train.py",
        [
            "-m",
            *tiny_overrides(tiny_root, tmp_path),
            "trainer.max_epochs=1",
            "model.optimizer.lr=1e-3,3e-4",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    runs = []
    for job in jobs:
        assert len(list((job / "checkpoints").glob("epoch_*.ckpt"))) == 1
        (wandb_run,) = list((job / "wandb").glob("offline-run-*"))
        runs.append(wandb_run.name.rsplit("-", 1)[-1])
        assert len(wandb_history(wandb_run, "val/iou")) == 1
    assert len(set(runs)) == 2
    # the learning rates that ran: the peak of the logged schedule (LearningRateMonitor) of each job
    ran = {}
    for job in jobs:
        logged = pd.read_csv(job / "csv" / "metrics.csv")["lr-AdamW"].dropna()
        ran[float(run_config(job).model.optimizer.lr)] = float(logged.max())
    assert set(ran) == {1e-3, 3e-4}
    assert all(peak == pytest.approx(lr, rel=1e-6) for lr, peak in ran.items())


@pytest.mark.parametrize(
    "override,expected",
    [
        ("trainer.gpus=2", "trainer.gpus=2 asks for 2 GPU(s)"),
        ("datamodule.val_fraction=1.5", "datamodule.val_fraction=1.5"),
        ("model.net.encoder_name=resnet_nope", "model.net.encoder_name"),
    ],
)
def test_user_errors_are_one_clear_message(override, expected, tiny_root, tmp_path):
    result = run_script("train.py", [*tiny_overrides(tiny_root, tmp_path), override, f"hydra.run.dir={tmp_path}/run"])
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_bad_trainer_value_names_the_key(tiny_root, tmp_path):
    result = run_script(
        "train.py",
        [*tiny_overrides(tiny_root, tmp_path), "trainer.precision=77", f"hydra.run.dir={tmp_path}/run"],
    )
    assert result.returncode == 2 and "trainer cannot be built" in result.stderr and "Traceback" not in result.stderr


def test_trains_a_few_steps_on_real_carvana_files(sample_full, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from carseg.training.run import train
    from tests.helpers import compose_cfg

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(
        "train",
        [
            "datamodule=carvana",
            f"datamodule.data_dir={sample_full}",
            "datamodule.image_size=[80,120]",
            "datamodule.val_fraction=0.25",
            "datamodule.num_workers=0",
            "datamodule.batch_size=4",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=2",
            "logger=csv",
            f"paths.root_dir={tmp_path}",
            "print_config=false",
        ],
        tmp_path / "run",
    )
    assert OmegaConf.select(cfg, "datamodule.cache") is False  # nothing is ever written into the data folder
    best = train(cfg)
    assert best is not None and 0.0 <= best <= 1.0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 3
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
