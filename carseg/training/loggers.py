"""Experiment loggers: Weights & Biases that goes offline by itself when no API key is configured, and
Lightning's CSV logger made to keep a resumed run's history: `metrics.csv` of a run resumed in its own folder
(or of a new folder seeded from the resumed run's, `carry_history`) still holds the rows logged before the
resume point, and the rows the stopped process logged after it (which the resumed run logs again) go."""

from __future__ import annotations

import csv
import netrc
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from carseg import console
from carseg.extras import require


def wandb_api_key_configured() -> bool:
    """Whether W&B can authenticate: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_logger(offline: bool | str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """A `WandbLogger`; `offline="auto"` logs offline unless an API key is configured (or WANDB_MODE says)."""
    mode = os.environ.get("WANDB_MODE")
    if offline == "auto":
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_api_key_configured())
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if offline:
        console.info(
            f"W&B has no API key here, so it logs offline under {Path(save_dir) / 'wandb'}; "
            "upload later with `wandb sync <that folder>/offline-run-*` (or `wandb login` first to log online)"
        )
    return WandbLogger(offline=bool(offline), save_dir=save_dir, **kwargs)


def _value(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


class _KeepingWriter(ExperimentWriter):
    """Reads an existing `metrics.csv` instead of deleting it; at the first row this process logs, the earlier
    rows of lower steps join its rows and the file is written again from them."""

    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict[str, Any]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                rows = list(csv.DictReader(file))
            self._earlier = [{k: _value(v) for k, v in row.items() if v != ""} for row in rows]
            self._fs.rm_file(self.metrics_file_path)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self._earlier is not None:
            first = step if step is not None else 0
            self.metrics.extend(row for row in self._earlier if int(row.get("step", 0)) < first)
            self._earlier = None
        super().log_metrics(metrics_dict, step)


class CSVLogger(LightningCSVLogger):
    """`pytorch_lightning.loggers.CSVLogger` that keeps the history of a resumed run (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment


def tensorboard_logger(**kwargs: Any) -> Any:
    """Lightning's TensorBoardLogger (`logger=tensorboard`), once the tensorboard extra is there."""
    require("tensorboard", "tensorboard", "logger=tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(**kwargs)


def carry_history(logger_cfg: Any, resume_from: Path | None) -> Path | None:
    """Before a run resumed from `resume_from` (a checkpoint in `<run>/checkpoints/`) logs into a new folder,
    copy the resumed run's `csv/metrics.csv` there (when it has one and the new folder has none), so that
    the new run's curves start at step 0. The file copied, or None."""
    csv_cfg = (logger_cfg or {}).get("csv") if resume_from is not None else None
    if csv_cfg is None:
        return None
    name, version = csv_cfg.get("name") or "", csv_cfg.get("version")
    version = version if isinstance(version, str) else f"version_{version}" if version is not None else ""
    new = Path(csv_cfg.save_dir) / name / version / ExperimentWriter.NAME_METRICS_FILE
    old = Path(resume_from).resolve().parent.parent / name / version / ExperimentWriter.NAME_METRICS_FILE
    if not old.is_file() or new.exists() or old == new.resolve():
        return None
    new.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(old, new)
    return new
