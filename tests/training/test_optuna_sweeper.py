"""carseg's Optuna sweeper without training: Hydra's sweep grammar to Optuna distributions, and trials left
running by dead processes recorded as failed through Optuna's public API."""

import os
import socket

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.carseg_optuna_sweeper.optuna_sweeper import OWNER, CarsegOptunaSweeper, search_space


def test_the_sweep_grammar_becomes_optuna_distributions():
    space, fixed = search_space(
        [
            "model.optimizer.lr=tag(log, interval(1e-4, 5e-3))",
            "model.net.arch=choice(Unet, FPN)",
            "datamodule.image_size=choice([128, 192], [160, 240])",
            "datamodule.batch_size=range(4, 17, 4)",
            "trainer.max_epochs=3",
        ]
    )
    assert space["model.optimizer.lr"] == FloatDistribution(1e-4, 5e-3, log=True)
    assert space["model.net.arch"] == CategoricalDistribution(["Unet", "FPN"])
    assert space["datamodule.image_size"] == CategoricalDistribution(["[128,192]", "[160,240]"])
    assert space["datamodule.batch_size"] == IntDistribution(4, 16, step=4)
    assert fixed == {"trainer.max_epochs": "3"}


def test_trials_of_dead_processes_are_failed_and_live_ones_kept(tmp_path):
    sweeper = CarsegOptunaSweeper(
        sampler=None,
        direction="maximize",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="s",
        n_trials=3,
        n_jobs=1,
        max_failure_rate=0.0,
        heartbeat_interval=60,
        params=None,
    )
    sweeper.sweep_dir = tmp_path
    study = sweeper.open_study()
    study.tell(study.ask(), 0.5)
    dead, alive, elsewhere = study.ask(), study.ask(), study.ask()
    dead_pid = os.fork()
    if dead_pid == 0:
        os._exit(0)
    os.waitpid(dead_pid, 0)
    dead.set_user_attr(OWNER, f"{socket.gethostname()}:{dead_pid}")
    alive.set_user_attr(OWNER, f"{socket.gethostname()}:{os.getpid()}")
    elsewhere.set_user_attr(OWNER, f"another-host.example:{dead_pid}")  # left to its heartbeat
    assert sweeper.fail_interrupted(study) == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    assert sweeper.counts(study) == (1, 2)
    assert optuna.__version__.split(".")[0] >= "4"
