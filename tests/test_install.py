"""carseg runs from an installed package (a wheel), not only from a source checkout."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, tiny_overrides

pytestmark = pytest.mark.slow


def test_installed_carseg_finds_its_configs_and_trains(tiny_root, tmp_path):
    site, source = tmp_path / "site", tmp_path / "source"  # a copy: the build leaves nothing in the checkout
    outputs = {"build", "logs", "data", "bench", "docs", "tests", "carseg.egg-info"}

    def skip(folder: str, names: list[str]) -> set[str]:
        top = {n for n in names if n.startswith(".") or n in outputs} if folder == str(ROOT) else set()
        return top | {"__pycache__"}

    shutil.copytree(ROOT, source, ignore=skip)
    (source / "conf" / "local" / "default.yaml").write_text("seed: 1\n")  # machine settings, not to be installed
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), "."],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (site / "carseg" / "conf" / "train.yaml").is_file() and (site / "carseg" / "conf" / "model").is_dir()
    assert not (site / "carseg" / "conf" / "local" / "default.yaml").exists()  # machine settings stay behind
    assert (site / "hydra_plugins" / "carseg_optuna_sweeper" / "optuna_sweeper.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    where = subprocess.run(
        [sys.executable, "-c", "import carseg.conf, carseg.entrypoints.train as t; print(carseg.conf.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "carseg.entrypoints.train",
            *tiny_overrides(tiny_root, tmp_path / "out"),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "logger=csv",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    (summary,) = list((tmp_path / "out" / "logs" / "train" / "runs").glob("*/summary.json"))
    assert '"global_step": 1' in summary.read_text()
