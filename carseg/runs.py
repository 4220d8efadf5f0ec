"""The run-folder layout, in one place: what a training run writes where, and how runs and checkpoints are found.

A run directory (Hydra's output directory of one job) holds:

    .hydra/config.yaml      the composed config          .hydra/overrides.yaml   the command-line overrides
    summary.json            the monitored metric, best checkpoint, epochs, wall time (written at the end)
    checkpoints/            the best checkpoint(s) and last.ckpt
    csv/metrics.csv         the logged metrics           wandb_run_id            the W&B run to resume

Training runs live under `<log_dir>/train/` (`runs/<time>/` and `multiruns/<time>/<job>/`). A multirun's
folder also holds `sweep_summary.csv` and, for a cross-validation by car, `cv_summary.json` / `.csv`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from carseg.errors import CarsegError

CONFIG = Path(".hydra") / "config.yaml"
OVERRIDES = Path(".hydra") / "overrides.yaml"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS_CSV = Path("csv") / "metrics.csv"
WANDB_ID = "wandb_run_id"
SWEEP_SUMMARY = "sweep_summary.csv"
CV_SUMMARY = "cv_summary.json"
CV_SUMMARY_CSV = "cv_summary.csv"
TRAIN_TASK = "train"


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory holding `path` (a checkpoint or any file of a run), if any."""
    for parent in Path(path).resolve().parents:
        if (parent / CONFIG).is_file():
            return parent
    return None


def run_config(run_dir: str | Path) -> DictConfig:
    """The composed config a run was started with."""
    return OmegaConf.load(Path(run_dir) / CONFIG)  # type: ignore[return-value]


def run_overrides(run_dir: str | Path) -> list[str] | None:
    """The command-line overrides of a run (None when it has no record of them)."""
    path = Path(run_dir) / OVERRIDES
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else None


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """A finished run's `summary.json` (None while the run has not finished)."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    path = Path(run_dir) / SUMMARY
    path.write_text(json.dumps(summary, indent=2))
    return path


def last_checkpoint(run_dir: str | Path) -> Path:
    """Where a run keeps its `last.ckpt` (which may not exist yet)."""
    return Path(run_dir) / CHECKPOINTS / LAST_CHECKPOINT


def training_runs_root(log_dir: str | Path) -> Path:
    return Path(log_dir) / TRAIN_TASK


def find_best_checkpoint(log_dir: str | Path) -> Path:
    """The best checkpoint of the newest training run under `log_dir` (runs and multirun jobs)."""
    root = training_runs_root(log_dir)
    candidates = []
    for summary_file in root.glob(f"**/{SUMMARY}"):
        best = (read_summary(summary_file.parent) or {}).get("best_checkpoint")
        if best and Path(best).is_file():
            candidates.append(Path(best))
    if not candidates:  # runs that were interrupted before they wrote a summary
        candidates = [p for p in root.glob(f"**/{CHECKPOINTS}/*.ckpt") if p.name != LAST_CHECKPOINT]
    if not candidates:
        raise CarsegError(f"no checkpoint found under {root}: train first (`make train`) or pass ckpt_path=<file.ckpt>")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def find_last_checkpoint(log_dir: str | Path) -> Path:
    """The newest `last.ckpt` of any training run under `log_dir` (what `ckpt_path=last` resumes)."""
    root = training_runs_root(log_dir)
    found = list(root.glob(f"**/{CHECKPOINTS}/{LAST_CHECKPOINT}"))
    if not found:
        raise CarsegError(f"ckpt_path=last: no {LAST_CHECKPOINT} under {root}; nothing to resume")
    return max(found, key=lambda p: p.stat().st_mtime)


def fold_checkpoints(sweep_dir: str | Path) -> list[Path]:
    """The best checkpoint of every finished fold of a cross-validation sweep (from its `cv_summary.json`)."""
    summary = json.loads((Path(sweep_dir) / CV_SUMMARY).read_text())
    return [Path(f["best_checkpoint"]) for f in summary["folds"] if f["best_checkpoint"]]


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """A finished run's best checkpoint, found in its own folder when the run was moved or copied since
    (summary.json records the path it was written at); None when the summary names none."""
    recorded = (read_summary(run_dir) or {}).get("best_checkpoint")
    if not recorded:
        return None
    here = Path(run_dir) / CHECKPOINTS / Path(recorded).name
    return here if here.is_file() else Path(recorded)


def checkpoints_in(paths: list[str | Path]) -> list[Path]:
    """Checkpoint files as a user names them: a `.ckpt` file, a run folder (its best checkpoint) or a
    cross-validation sweep folder (the best checkpoint of each fold)."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_file():
            found.append(item)
        elif (item / CV_SUMMARY).is_file():
            found += fold_checkpoints(item)
        elif best := best_checkpoint(item):
            found.append(best)
        else:
            raise CarsegError(
                f"--ckpt {item}: neither a checkpoint file, nor a finished run folder (summary.json), nor a "
                f"cross-validation folder ({CV_SUMMARY})"
            )
    return found
