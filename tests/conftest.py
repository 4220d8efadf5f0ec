"""Fixtures: a tiny synthetic Carvana-layout set, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from carseg.data.synthetic import SynthSpec, write_synthetic
from tests.helpers import SHARED_CARVANA, TINY


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny synthetic set under the name the synthetic config gives it."""
    root = tmp_path_factory.mktemp("data")
    spec = SynthSpec(**TINY)
    write_synthetic(
        root / f"synthetic_{spec.num_cars}cars_{spec.width}x{spec.height}_seed{spec.seed}",
        spec,
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def tiny_data(tiny_root: Path) -> Path:
    return next(tiny_root.glob("synthetic_*"))


@pytest.fixture
def sample_full() -> Path:
    path = SHARED_CARVANA / "sample_full"
    if not path.is_dir():
        pytest.skip(f"real Carvana sample not found at {path} (see the project README: real data tests)")
    return path


@pytest.fixture(scope="session")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """One short training run on the tiny set, shared by the tests that need a checkpoint: (run dir, best val/iou)."""
    from omegaconf import OmegaConf

    from carseg.training.run import train
    from tests.helpers import compose_cfg, tiny_overrides

    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    out = tmp_path_factory.mktemp("train")
    run_dir = out / "logs" / "train" / "runs" / "r1"
    cfg = compose_cfg("train", [*tiny_overrides(tiny_root, out), "trainer.max_epochs=6", "trainer=cpu"], run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as @hydra.main does
    best = train(cfg)
    mp.undo()
    return run_dir, best


@pytest.fixture(scope="session")
def best_ckpt(trained: tuple[Path, float]) -> Path:
    return next((trained[0] / "checkpoints").glob("epoch_*.ckpt"))
