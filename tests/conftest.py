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
