"""Readable console output: carseg's messages (Python logging, once per job: rank zero) and the composed
config as a rich tree.

carseg's messages go to the `carseg` logger. On the console they read `carseg: ...` (`carseg: warning: ...`
on stderr), and they propagate to the root logger, where a Hydra run's log file (`<task>.log` in its
folder) keeps them beside Lightning's and Hydra's own."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from lightning_utilities.core.rank_zero import rank_zero_only  # the one Lightning's rank-zero helpers use
from omegaconf import DictConfig, OmegaConf

LOG = logging.getLogger("carseg")
# the process's rank, as Lightning reads it on import (commands that never import Lightning need it too)
if not hasattr(rank_zero_only, "rank"):
    _rank = next(
        (os.environ[k] for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if k in os.environ), 0
    )
    rank_zero_only.rank = int(_rank)


class _ConsoleHandler(logging.StreamHandler):
    """`carseg: message` on stdout, `carseg: warning: message` on stderr: the streams of the moment (so that a
    redirected or captured stdout gets them too)."""

    def __init__(self) -> None:
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        level = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(record.levelno, "")
        return "carseg: " + level + record.getMessage()

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)


LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


def console_logging() -> logging.Logger:
    """Show the `carseg` logger's messages on the console, once (the first message does it too). They also
    reach the root logger's handlers (a run's log file); a program whose root logger prints to the console
    too can drop carseg's own: `logging.getLogger("carseg").handlers.clear()`."""
    LOG.disabled = False  # logging.config.dictConfig elsewhere (a library, a launcher) disables loggers it omits
    if not any(isinstance(h, _ConsoleHandler) for h in LOG.handlers):
        LOG.addHandler(_ConsoleHandler())
    if LOG.level == logging.NOTSET:
        LOG.setLevel(logging.INFO)
    return LOG


def lightning_into_run_log() -> None:
    """Let Lightning's messages reach the root logger's files too (a Hydra run's `<task>.log`), where the root
    logger writes only to files: Lightning prints to the console itself."""
    root = logging.getLogger()
    if root.handlers and all(isinstance(h, logging.FileHandler) for h in root.handlers):
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).propagate = True


@rank_zero_only
def info(message: str) -> None:
    """A message for the user, from rank zero only (once per job under DDP)."""
    console_logging().info(message)


@rank_zero_only
def warning(message: str) -> None:
    """A warning (stderr), from rank zero only."""
    console_logging().warning(message)


FIRST = ("datamodule", "model", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, order: Sequence[str] = FIRST, save_to: str | Path | None = None) -> None:
    """Print the config as a tree (main groups first) and optionally save it as text."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as fh:
            rich.print(tree, file=fh)
