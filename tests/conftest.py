"""Fixtures: a tiny synthetic Carvana-layout set, written once per test session; the `slow` and `gpu` markers
kept true (a test outside `slow` that trains or spawns fails; `gpu` tests skip without CUDA)."""

from __future__ import annotations

import gzip
import multiprocessing.process
import shutil
import subprocess
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from carseg.data.synthetic import SynthSpec, write_synthetic
from tests.helpers import ROOT, SAMPLE_FULL, TINY

# session fixtures that train a model: a test that uses them trains too
TRAINING_FIXTURES = {"trained", "best_ckpt"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none is visible here); runs on GPU machines (`pytest -m gpu`)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is set up: a test outside `slow` may not use a fixture that trains."""
    used = TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
    if used and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} uses {sorted(used)}, which train a model, but is not marked slow", pytrace=False)


@pytest.fixture(autouse=True)
def slow_marker_is_true(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside `slow` tests, training and starting processes fail the test: `-m "not slow"` stays quick."""
    if request.node.get_closest_marker("slow") is not None:
        return
    name = request.node.nodeid

    def refuse(what: str):
        def stop(*args, **kwargs):
            pytest.fail(f"{name} {what} but is not marked slow: add @pytest.mark.slow", pytrace=False)

        return stop

    monkeypatch.setattr(pl.Trainer, "fit", refuse("trains a model (Trainer.fit)"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process (subprocess)"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("starts a process (multiprocessing)"))


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


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained checkpoint (U-Net MobileNetV3-S at 64x96, tests/fixtures), unpacked once."""
    ckpt = tmp_path_factory.mktemp("small_ckpt") / "unet_mnv3s_64x96.ckpt"
    with gzip.open(ROOT / "tests/fixtures/legacy_unet_mnv3s_64x96.ckpt.gz") as src, open(ckpt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return ckpt


@pytest.fixture
def sample_full() -> Path:
    path = SAMPLE_FULL
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
    # the recipe's light U-Net (ResNet-18): its outputs are the same byte for byte whatever the batching
    overrides = [*tiny_overrides(tiny_root, out), "trainer.max_epochs=6", "trainer=cpu", "model=unet_resnet18_light"]
    cfg = compose_cfg("train", overrides, run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as @hydra.main does
    best = train(cfg)
    mp.undo()
    return run_dir, best


@pytest.fixture(scope="session")
def best_ckpt(trained: tuple[Path, float]) -> Path:
    return next((trained[0] / "checkpoints").glob("epoch_*.ckpt"))
