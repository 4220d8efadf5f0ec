"""The GPU check's bundle covers what carseg imports, and the check stops with one clear line where it can't run."""

import ast
import functools
import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.helpers import ROOT

FIRST_PARTY = {"carseg", "tests", "hydra_plugins.carseg_optuna_sweeper"}
# what `make device-check` imports there: the package, its Hydra plugin and the GPU tests with their helpers
SOURCES = [
    *sorted((ROOT / "carseg").rglob("*.py")),
    *sorted((ROOT / "hydra_plugins").rglob("*.py")),
    *(ROOT / "tests" / name for name in ("test_gpu.py", "conftest.py", "helpers.py")),
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"device_{name}", ROOT / "device" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = _load("bundle")


def module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not those imported inside functions, on demand)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        for child in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.add(child.module)
    return found


@functools.cache
def _file_owners() -> dict[str, str]:
    """Installed module file → the distribution that installed it."""
    owners = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            if file.suffix in (".py", ".so"):
                owners[os.path.realpath(dist.locate_file(file))] = bundle.normalize(dist.metadata["Name"])
    return owners


def distribution_of(module: str) -> str | None:
    """The installed distribution that holds `module` (None: the standard library or carseg itself)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__" or any(module.startswith(p) for p in FIRST_PARTY):
        return None
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not importable here"
    origin = os.path.realpath(spec.origin)
    assert origin in _file_owners(), f"no installed distribution holds {module} ({origin})"
    return _file_owners()[origin]


def test_bundle_covers_every_third_party_import():
    imports = set().union(*(module_level_imports(p) for p in SOURCES))
    tops = {m.split(".")[0] for m in imports}
    assert {"torch", "hydra", "segmentation_models_pytorch", "albumentations", "optuna"} <= tops
    assert not tops & bundle.LEFT_OUT  # what the bundle leaves out is imported only where it is used
    carried = set(bundle.needed())
    assert not set(carried) & bundle.LEFT_OUT
    have = bundle.image_packages()
    missing = {}
    for module in sorted(imports):
        dist = distribution_of(module)
        if dist is not None and dist not in carried | have:
            missing[module] = dist
    assert not missing, f"neither in the GPU image nor in the bundle: {missing}"
    # what the image lacks is carried: hydra's grammar runtime (an sdist only) included
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "segmentation-models-pytorch"} <= carried
    assert not (carried - set(bundle.BUILD_TOOLS)) & have


def test_a_written_bundle_holds_a_wheel_for_each_requirement():
    manifest = ROOT / ".device" / "manifest.json"
    if not manifest.is_file():
        pytest.skip("no bundle written here (`make device-bundle` writes .device/)")
    data = json.loads(manifest.read_text())
    wheels = {bundle.normalize(w.split("-")[0]): w for w in data["wheels"]}
    assert set(wheels) == set(data["requirements"]) and all(
        (manifest.parent / "wheels" / w).is_file() for w in wheels.values()
    )
    assert len(data["validation_cars"]) == 8 and data["mib"] <= 56


def _check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "device" / "check.py"), "--out", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.slow
def test_without_cuda_the_check_stops_with_one_line(tmp_path):
    fake = tmp_path / "bundle"
    fake.mkdir()
    (fake / "manifest.json").write_text(json.dumps({"wheels": []}))
    done = _check(tmp_path, "--bundle", str(fake), CUDA_VISIBLE_DEVICES="")
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("device check: no CUDA device is visible")
    assert json.loads((tmp_path / "out" / "check.json").read_text())["status"] == "no-cuda"


@pytest.mark.slow
def test_without_a_bundle_the_check_names_the_make_target(tmp_path):
    done = _check(tmp_path, "--bundle", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and (done.stdout + done.stderr).strip().count("\n") == 0
    assert "make device-bundle" in done.stdout and "Traceback" not in done.stderr
    done = _check(tmp_path, "--bundle", str(tmp_path / "nowhere"), "--steps", "install,fly")
    assert done.returncode == 2 and "--steps fly: unknown" in done.stdout


def test_a_dry_run_of_the_check_asks_carseg_only_what_its_commands_take(tmp_path, monkeypatch):
    """Every step runs, in order, within the time limits, and each carseg command it would run on the GPU
    parses with carseg's own options (no flag the command lacks)."""
    import shlex

    from carseg.cli import build_parser

    check = _load("check")
    fake = tmp_path / "bundle"
    fake.mkdir()
    (fake / "manifest.json").write_text(json.dumps({"wheels": []}))
    ran: dict[str, list[list[str]]] = {}
    monkeypatch.setattr(check, "_probe_cuda", lambda: {"available": True, "name": "GPU", "torch": "x", "cuda": "x"})
    monkeypatch.setattr(check.Check, "run", lambda self, name, commands, env=None: bool(ran.setdefault(name, commands)))
    monkeypatch.setattr(sys, "argv", ["check.py", "--bundle", str(fake), "--out", str(tmp_path / "out")])
    check.main()
    assert list(ran) == [s for s in check.STEPS if s != "evaluate"]  # evaluate needs the run's checkpoint
    assert sum(check.LIMITS.values()) <= 7.5 * 60
    assert check.LIMITS["bench_infer"] > check.INFER_BUDGET_S
    parser = build_parser()
    for commands in ran.values():
        for command in commands:
            if command[1:3] == ["-m", "carseg.cli"]:
                parser.parse_args(command[3:])  # SystemExit on an unknown option
            assert all(isinstance(part, str) for part in command), shlex.join(map(str, command))
