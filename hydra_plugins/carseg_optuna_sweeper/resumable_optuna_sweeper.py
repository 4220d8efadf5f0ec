"""Optuna sweeps that survive: the study lives in SQLite under the sweep folder, so the same command run again
after a crash, SIGTERM or Ctrl-C continues it.

Hydra's Optuna sweeper (hydra-optuna-sweeper) already loads a study that exists in its storage, but it starts
its job numbers at 0 (overwriting the folders of finished trials), asks for `n_trials` new trials whatever the
study holds, and leaves an interrupted trial RUNNING forever. This sweeper keeps the plugin's search (the same
config keys) and, before it starts: records interrupted trials as failed, numbers new jobs after the existing
ones, and asks only for the trials still missing, so a study ends with exactly `n_trials` finished trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig
from optuna.trial import TrialState

STUDY_FILE = "optuna.db"


def storage_url(sweep_dir: str | Path) -> str:
    """The SQLite storage of the study kept in `sweep_dir`."""
    return f"sqlite:///{Path(sweep_dir).resolve() / STUDY_FILE}"


class ResumableOptunaSweeper(OptunaSweeper):
    """Hydra's OptunaSweeper whose study continues where an interrupted run of the same command stopped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wanted_trials = self.sweeper.n_trials

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl = self.sweeper
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if impl.storage is None:
            impl.storage = storage_url(sweep_dir)
        study = optuna.create_study(
            study_name=impl.study_name,
            storage=impl.storage,
            directions=impl._get_directions(),
            load_if_exists=True,
        )
        interrupted = [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        for trial in interrupted:
            study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
        finished = sum(t.state == TrialState.COMPLETE for t in study.trials)
        impl.n_trials = max(0, self.wanted_trials - finished)
        impl.job_idx = len(study.trials)  # new jobs get new folders
        if study.trials:
            print(
                f"carseg: continuing Optuna study {impl.study_name!r} in {sweep_dir}: {finished} of "
                f"{self.wanted_trials} trials finished"
                + (f", {len(interrupted)} interrupted trial(s) recorded as failed" if interrupted else "")
                + f"; {impl.n_trials} to go"
            )
