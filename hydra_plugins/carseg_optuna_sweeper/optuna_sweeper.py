"""carseg's Optuna sweeper for Hydra, on current Optuna through its public API only.

`hparams_search=optuna` (conf/hparams_search/optuna.yaml) selects it. The search space is Hydra's sweep
grammar in `hydra.sweeper.params` (or on the command line): `choice(...)`, `range(...)`, `interval(...)`,
`tag(log, interval(...))`. The study lives in any Optuna storage (default: SQLite, `optuna.db` in the sweep
folder) and survives: the same command run again after a crash, SIGTERM or Ctrl-C continues it, and it ends
with exactly `n_trials` finished (COMPLETE) trials.

- Each trial runs inside `Study.optimize`, so Optuna records it as failed when its job raises or is
  interrupted, and, with an RDB storage, keeps its heartbeat: a trial whose process died without a word is
  failed by `optuna.storages.fail_stale_trials` once its heartbeat is stale (`heartbeat_interval`).
- A trial left running by a process of this machine that no longer exists is failed at once on the next
  start (its owner is recorded as a user attribute).
- Several sweeper processes (on one machine or many) may share one study: each trial's job folder is its
  trial number, and a process that finds the study already full (finished plus running trials) stops.
"""

# no `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where a
# dataclass with string annotations cannot be built
import logging
import math
import os
import socket
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

log = logging.getLogger(__name__)
# the heartbeat and fail_stale_trials are public and marked experimental; carseg relies on them knowingly
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
STUDY_FILE = "optuna.db"
OWNER = "carseg_owner"  # user attribute: "<host>:<pid>" of the process running the trial


@dataclass
class CarsegOptunaSweeperConf:
    """`hydra.sweeper` for `hydra/sweeper=carseg_optuna`."""

    _target_: str = "hydra_plugins.carseg_optuna_sweeper.optuna_sweeper.CarsegOptunaSweeper"
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # "maximize", "minimize" or a list of them (one per value the task returns)
    direction: Any = "maximize"
    # any Optuna storage URL; null: sqlite:///<sweep dir>/optuna.db
    storage: Any = None
    study_name: str = "carseg"
    # finished (COMPLETE) trials the study ends with
    n_trials: int = 20
    # trials run at once by this process (Optuna's threads; the launcher must run jobs in parallel)
    n_jobs: int = 1
    # share of this run's trials that may fail before the sweep stops (0: the first failure stops it)
    max_failure_rate: float = 0.0
    # seconds between heartbeats of a running trial (RDB storages); a trial silent for 2x this is failed
    heartbeat_interval: int = 60
    params: Any = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="carseg_optuna", node=CarsegOptunaSweeperConf, provider="carseg"
)


def storage_url(sweep_dir: str | Path) -> str:
    """The SQLite storage of the study kept in `sweep_dir`."""
    return f"sqlite:///{Path(sweep_dir).resolve() / STUDY_FILE}"


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of one sweep override (its value as text when it is not a sweep)."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            steps = math.floor((value.stop - value.start) / value.step - 1e-9)
            return FloatDistribution(value.start, value.start + steps * value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep this sweeper takes (choice, range, interval)")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed values) of overrides in Hydra's grammar."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        found = distribution(override)
        target = space if isinstance(found, BaseDistribution) else fixed
        target[override.get_key_element()] = found
    return space, fixed


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """A value for `name` from `dist`, through the trial's public suggest methods."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _alive_here(owner: str) -> bool:
    """Whether `owner` ("host:pid") is a process alive on this machine (True when it is another machine's)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CarsegOptunaSweeper(Sweeper):
    """Hydra sweeper: an Optuna study that continues where an interrupted run of the same command stopped."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        heartbeat_interval: int,
        params: Any,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: both must be at least 1")
        if not 0 <= max_failure_rate <= 1:
            raise ValueError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: give a share from 0 to 1")
        self.sampler_config, self.direction, self.storage = sampler, direction, storage
        self.study_name, self.n_trials, self.n_jobs = study_name, int(n_trials), int(n_jobs)
        self.max_failure_rate, self.heartbeat_interval = float(max_failure_rate), int(heartbeat_interval)
        self.params = params
        self.launch_lock = threading.Lock()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)
        # jobs run in parallel only through a launcher that runs them elsewhere (joblib, submitit, ...)
        self.parallel_launcher = type(self.launcher).__name__ != "BasicLauncher"

    def directions(self) -> list[str]:
        directions = (
            self.direction
            if isinstance(self.direction, Sequence) and not isinstance(self.direction, str)
            else [self.direction]
        )
        return [str(getattr(d, "name", d)) for d in directions]

    def open_study(self) -> optuna.Study:
        """The study, created or loaded; an RDB storage records the trials' heartbeats."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage or storage_url(self.sweep_dir)
        storage: Any = url
        if isinstance(url, str) and "://" in url:
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=self.heartbeat_interval)
        sampler = self.sampler_config  # Hydra has built it (the sweeper's config is instantiated recursively)
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            sampler = instantiate(sampler)
        return optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler,
            directions=self.directions(),
            load_if_exists=True,
        )

    def fail_interrupted(self, study: optuna.Study) -> int:
        """Record as failed the trials left running by dead processes; how many."""
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            owner = trial.user_attrs.get(OWNER)
            if trial.state == TrialState.WAITING or (owner is not None and not _alive_here(owner)):
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        return len(before - after)

    @staticmethod
    def counts(study: optuna.Study) -> tuple[int, int]:
        """(finished, running) trials of the study."""
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return finished, len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def sweep(self, arguments: list[str]) -> None:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, fixed = search_space([*params, *arguments])
        study = self.open_study()
        interrupted = self.fail_interrupted(study)
        finished, running = self.counts(study)
        if study.trials:
            print(
                f"carseg: continuing Optuna study {self.study_name!r} in {self.sweep_dir}: {finished} of "
                f"{self.n_trials} trials finished"
                + (f", {interrupted} interrupted trial(s) recorded as failed" if interrupted else "")
                + (f", {running} running elsewhere" if running else "")
                + f"; {max(0, self.n_trials - finished - running)} to go"
            )
        log.info("Study name: %s, storage: %s, sampler: %s", self.study_name, self.storage, study.sampler)
        failures, launched = 0, 0
        while True:
            finished, running = self.counts(study)
            to_go = self.n_trials - finished - running
            if to_go <= 0:
                break
            before = len(study.trials)
            try:
                study.optimize(
                    lambda trial: self.run_trial(study, trial, space, fixed),
                    n_trials=to_go,
                    n_jobs=self.n_jobs if self.parallel_launcher else 1,
                    catch=(Exception,) if self.max_failure_rate > 0 else (),
                )
            finally:
                self.write_results(study)
            ran = study.trials[before:]
            launched += len(ran)
            failures += sum(t.state == TrialState.FAIL for t in ran)
            if failures > self.max_failure_rate * max(launched, 1):
                raise RuntimeError(
                    f"{failures} of {launched} trials failed, over hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate:g}; see the failed jobs' logs in {self.sweep_dir}"
                )

    def run_trial(
        self, study: optuna.Study, trial: optuna.Trial, space: dict[str, BaseDistribution], fixed: dict[str, str]
    ) -> float | list[float]:
        """Launch the job of one trial (its folder: the trial's number) and return what the task returned."""
        trial.set_user_attr(OWNER, f"{socket.gethostname()}:{os.getpid()}")
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number != trial.number]
        if finished + len(others) >= self.n_trials:  # filled meanwhile by another process sharing the study
            study.stop()
            raise optuna.TrialPruned("the study already has its trials")
        values = {name: suggest(trial, name, dist) for name, dist in space.items()}
        overrides = tuple(f"{name}={value}" for name, value in {**values, **fixed}.items())
        if self.parallel_launcher:
            (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
        else:
            with self.launch_lock:
                (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
        value = result.return_value  # raises the job's own error when it failed
        returned = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(returned) != len(self.directions()) or any(v is None or not math.isfinite(float(v)) for v in returned):
            raise ValueError(
                f"trial {trial.number}: the task returned {value!r}, not {len(self.directions())} number(s)"
            )
        return [float(v) for v in returned] if len(returned) > 1 else float(returned[0])

    def write_results(self, study: optuna.Study) -> None:
        """`optimization_results.yaml` in the sweep folder: the best trial's parameters and value(s)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return
        if len(self.directions()) == 1:
            results: dict[str, Any] = {
                "name": "optuna",
                "best_params": study.best_params,
                "best_value": study.best_value,
            }
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
            }
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
