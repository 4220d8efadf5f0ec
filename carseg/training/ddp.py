"""DDP under Hydra multirun: child ranks re-run the one job they belong to, not the whole sweep.

Lightning starts ranks 1..N-1 by re-running the script with its original arguments. In a multirun those
hold `-m` and the sweep, so every rank would fan the sweep out again. Here the children get the job's
own overrides (no `-m`) and the job's output directory instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import lightning_fabric.strategies.launchers.subprocess_script as fabric_launcher
import pytorch_lightning.strategies.launchers.subprocess_script as pl_launcher
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path

import __main__


def job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and working directory that start rank `local_rank` of the current Hydra job."""
    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        command += list(hydra_cfg.overrides.task)  # this job's overrides only, without -m
        command += [
            o
            for o in hydra_cfg.overrides.hydra
            if not o.startswith(("hydra.sweep", "hydra/sweeper", "hydra/launcher", "hydra.launcher", "hydra.mode"))
        ]
    else:
        command += sys.argv[1:]
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",  # a config that makes itself a multirun (cv=kfold, hparams_search) runs one job here
    ]
    return command, get_original_cwd()


def install() -> None:
    """Make Lightning's subprocess launcher use `job_subprocess_cmd` (idempotent)."""
    fabric_launcher._hydra_subprocess_cmd = job_subprocess_cmd
    pl_launcher._hydra_subprocess_cmd = job_subprocess_cmd


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "RANK")


@contextlib.contextmanager
def isolated_job() -> Iterator[None]:
    """Leave no distributed state behind: the next job of a multirun in this process starts clean.

    Lightning's launcher writes the rank variables into this process's environment and keeps the
    process group alive; a second DDP job would then believe its ranks were started externally.
    """
    saved = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
