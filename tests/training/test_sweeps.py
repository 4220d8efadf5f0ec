"""Sweeps x DDP, Optuna, submitit, launcher configs, W&B grouping, and resuming a killed run."""

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import (
    compose_cfg,
    optuna_overrides,
    run_script,
    start_script,
    stop_when,
    tiny_overrides,
    wandb_records,
)

pytestmark = pytest.mark.slow


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _wandb_run(job: Path):
    (run,) = list((job / "wandb").glob("offline-run-*"))
    return next(r.run for r in wandb_records(next(run.glob("*.wandb"))) if r.WhichOneof("record_type") == "run")


@pytest.mark.parametrize(
    "sweep_args,varied",
    [
        (["-m", "model.optimizer.lr=1e-3,3e-4"], "model.optimizer.lr=0.001"),
        (["cv=kfold", "datamodule.num_folds=2"], "datamodule.fold=0"),  # a multirun by its config, not by -m
    ],
    ids=["lr", "cv"],
)
def test_multirun_of_ddp_jobs_trains_each_job_once(sweep_args, varied, tiny_root, tmp_path):
    result = run_script(
        "train.py",
        [
            *sweep_args,
            *tiny_overrides(tiny_root, tmp_path),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert text.count("Launching 2 jobs") == 1  # child ranks did not fan the sweep out again
    assert text.count("MEMBER: 2/2") == 2  # each job ran on two processes
    jobs = _jobs(tmp_path / "sweep")
    assert [j.name for j in jobs] == ["0", "1"]
    assert not (tmp_path / "logs").exists()  # no stray run or sweep directories from child ranks
    ids = set()
    for job in jobs:
        assert len(list((job / "checkpoints").glob("epoch_*.ckpt"))) == 1
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
        assert json.loads((job / "summary.json").read_text())["global_step"] > 0
        run = _wandb_run(job)
        assert run.run_group == "sweep" and "sweep" in run.tags
        ids.add(run.run_id)
    assert len(ids) == 2
    summary = pd.read_csv(tmp_path / "sweep" / "sweep_summary.csv")
    assert sorted(summary["job"]) == [0, 1] and summary["best"].notna().all()
    assert summary["best"].is_monotonic_decreasing  # best val/iou first
    assert summary["overrides"].str.contains(varied).sum() == 1


def test_optuna_sweep(tiny_root, tmp_path):
    # Default paths and sweep directory, started from another folder: outputs land under <cwd>/logs.
    result = run_script(
        "train.py",
        [
            *optuna_overrides(tiny_root, tmp_path),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    sweep = tmp_path / "logs" / "train" / "optuna" / "carseg"  # named by the study, so that it can continue
    assert len(_jobs(sweep)) == 2 and (sweep / "optuna.db").is_file()
    results = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in results and "best_value" in results
    summary = pd.read_csv(sweep / "sweep_summary.csv")
    assert len(summary) == 2 and summary["overrides"].str.contains("model.net.arch=").all()
    assert "ranked by best val/iou" in result.stdout


def test_submitit_local_launcher(tiny_root, tmp_path):
    result = run_script(
        "train.py",
        [
            "-m",
            "hydra/launcher=submitit_local",
            *tiny_overrides(tiny_root, tmp_path),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "model.optimizer.lr=1e-3,3e-4",
            f"hydra.sweep.dir={tmp_path}/sub",
        ],
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    jobs = _jobs(tmp_path / "sub")
    assert len(jobs) == 2 and all((j / "summary.json").is_file() for j in jobs)
    assert (tmp_path / "sub" / ".submitit").is_dir()


def test_launcher_configs_follow_the_trainer(tmp_path):
    cfg = compose_cfg(
        "train",
        [
            "hydra/launcher=submitit_slurm",
            "trainer.gpus=8",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
            f"paths.root_dir={tmp_path}",
        ],
        None,
        keep_hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node, launcher.partition) == (2, 8, 8, "gpu")
    cfg = compose_cfg("train", ["hydra/launcher=joblib", f"paths.root_dir={tmp_path}"], None, keep_hydra=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


def test_resume_after_sigterm_matches_an_uninterrupted_run(tiny_root, tmp_path):
    base = [*tiny_overrides(tiny_root, tmp_path), "trainer.max_epochs=4", "datamodule.image_size=[96,144]"]
    first = tmp_path / "first"
    proc = start_script("train.py", [*base, f"hydra.run.dir={first}"])

    def next_epoch_begun() -> bool:
        if not (first / "checkpoints" / "last.ckpt").is_file():
            return False
        time.sleep(1.0)  # well into the next epoch
        return True

    _, err = stop_when(proc, next_epoch_begun)
    assert proc.returncode != 0 and "training interrupted" in err and "ckpt_path=" in err, err[-2000:]
    kept = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert "last.ckpt" in kept and not (first / "summary.json").exists()

    second = tmp_path / "second"
    result = run_script("train.py", [*base, f"ckpt_path={first}/checkpoints/last.ckpt", f"hydra.run.dir={second}"])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((second / "summary.json").read_text())
    # carseg's messages: once on the console as `carseg: ...`, and in the run's log file beside Lightning's
    assert result.stdout.count(f"carseg: resuming from {first}") == 1, result.stdout[-2000:]
    log = (second / "train.log").read_text()
    assert "[carseg][INFO] - resuming from" in log and "[carseg][INFO] - best val/iou" in log
    assert "[pytorch_lightning" in log and "Trainer.fit" in log
    full = tmp_path / "full"
    result = run_script("train.py", [*base, f"hydra.run.dir={full}"])
    assert result.returncode == 0
    uninterrupted = json.loads((full / "summary.json").read_text())
    assert resumed["global_step"] == uninterrupted["global_step"] == 4 * 8
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == kept  # nothing lost
    assert (second / "wandb_run_id").read_text() == (first / "wandb_run_id").read_text()


def test_ckpt_path_last_is_the_newest_runs_last_checkpoint(tmp_path):
    from carseg.errors import CarsegError
    from carseg.training.run import resolve_ckpt_path

    with pytest.raises(CarsegError, match="nothing to resume"):
        resolve_ckpt_path("last", tmp_path)
    old = tmp_path / "train" / "runs" / "a" / "checkpoints" / "last.ckpt"
    new = tmp_path / "train" / "multiruns" / "b" / "0" / "checkpoints" / "last.ckpt"
    for i, path in enumerate((old, new)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    assert resolve_ckpt_path("last", tmp_path) == new
    assert resolve_ckpt_path(str(old), tmp_path) == old
    with pytest.raises(CarsegError, match="no such file"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path)


def test_last_checkpoint_every_epoch_and_at_the_stop(tiny_root, tmp_path):
    """The best checkpoint stays at epoch 0 (optimized_mode=min on a rising val/iou); last.ckpt still follows
    every epoch, and SIGTERM in epoch 3 saves the state at the stop, from which the run resumes."""
    import torch

    steps = 8  # 4 training cars x 16 photos / batch 8
    base = [*tiny_overrides(tiny_root, tmp_path), "trainer.max_epochs=5", "optimized_mode=min", "logger=csv"]
    run = tmp_path / "run"
    stop = ["+callbacks.stop._target_=tests.helpers.SigtermAt", f"+callbacks.stop.step={3 * steps + 3}"]
    result = run_script("train.py", [*base, *stop, f"hydra.run.dir={run}"])
    assert result.returncode != 0 and "training interrupted" in result.stderr, result.stderr[-2000:]
    (best,) = list((run / "checkpoints").glob("epoch_*.ckpt"))
    assert best.name.startswith("epoch_000-")  # the monitored metric never improved after epoch 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted([best.name, "last.ckpt"])
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3 * steps + 3  # the state at the stop, in epoch 3: no finished epoch lost
    assert torch.load(best, map_location="cpu", weights_only=False)["global_step"] == steps  # untouched

    resumed = tmp_path / "resumed"
    result = run_script("train.py", [*base, f"ckpt_path={last}", f"hydra.run.dir={resumed}"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["global_step"] == 5 * steps
    # the wall times of both processes: epoch 3 in two parts, counted once in its stage
    times = summary["epoch_times"]
    assert [(e["epoch"], e.get("until_checkpoint", False)) for e in times] == [
        (0, False),
        (1, False),
        (2, False),
        (3, True),
        (3, False),
        (4, False),
    ]
    assert sum(e["images"] for e in times) == 5 * steps * 8 and all(e["seconds"] > 0 for e in times)
    assert [s["epochs"] for s in summary["stages"]] == [5]
    # the resumed run's metrics.csv holds the whole history, each epoch's validation once
    history = pd.read_csv(resumed / "csv" / "metrics.csv")
    validated = history.dropna(subset=["val/iou"])
    assert validated["epoch"].tolist() == [0, 1, 2, 3, 4]
    logged = history.dropna(subset=["train/loss_step"])["step"]
    assert logged.is_unique and logged.min() < 3 * steps < 3 * steps + 3 < logged.max()


def test_an_interrupted_optuna_study_continues(tiny_root, tmp_path):
    import optuna

    command = [
        *optuna_overrides(tiny_root, tmp_path),
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=2",
        "logger=csv",
    ]
    sweep = tmp_path / "logs" / "train" / "optuna" / "carseg"
    proc = start_script("train.py", command, cwd=tmp_path)
    _, err = stop_when(proc, (sweep / "1" / "checkpoints" / "last.ckpt").is_file)  # trial 0 done, trial 1 training
    assert proc.returncode != 0, err[-2000:]
    first = (sweep / "0" / "summary.json").read_bytes()
    assert not (sweep / "1" / "summary.json").exists()

    result = run_script("train.py", command, cwd=tmp_path)  # the same command again
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "continuing Optuna study 'carseg'" in result.stdout and "1 interrupted trial(s)" in result.stdout
    study = optuna.load_study(study_name="carseg", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]  # exactly n_trials finished; the interrupted one failed
    assert [j.name for j in _jobs(sweep)] == ["0", "1", "2"] and (sweep / "0" / "summary.json").read_bytes() == first
    bests = [json.loads((sweep / j / "summary.json").read_text())["best"] for j in ("0", "2")]
    assert study.best_value == pytest.approx(max(bests))
    assert "best_value" in (sweep / "optimization_results.yaml").read_text()


def test_two_sweeper_processes_share_one_study(tiny_root, tmp_path):
    """Two launches of the same command against one storage split the study between them: exactly n_trials
    finished trials, each in its own job folder (the trial's number), none run twice."""
    import optuna

    command = [
        *optuna_overrides(tiny_root, tmp_path, n_trials=3),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "logger=csv",
    ]
    procs = [start_script("train.py", command, cwd=tmp_path) for _ in range(2)]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out + err)[-3000:]
    sweep = tmp_path / "logs" / "train" / "optuna" / "carseg"
    study = optuna.load_study(study_name="carseg", storage=f"sqlite:///{sweep / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and not [t for t in study.trials if t.state.name in ("RUNNING", "FAIL")]
    assert {str(t.number) for t in complete} <= {j.name for j in _jobs(sweep)}
    for trial in complete:  # each finished trial's job trained once, in its own folder
        assert json.loads((sweep / str(trial.number) / "summary.json").read_text())["best"] == pytest.approx(
            trial.value
        )
    owners = {t.user_attrs["carseg_owner"] for t in complete}
    assert len(owners) >= 1 and all(":" in o for o in owners)
