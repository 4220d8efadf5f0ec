"""The package's structure: its layers (import-linter), imports at module level, the README's map, the markers."""

import ast
import re
import subprocess

import pytest
import pytorch_lightning as pl
from importlinter.cli import lint_imports

from tests.helpers import ROOT

PACKAGE = ROOT / "carseg"
# the console script imports each command's modules when it runs, so that `carseg --help` starts without torch
LAZY_IMPORTS_ALLOWED = {PACKAGE / "cli.py"}


def test_the_layered_contract_is_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_the_contract_names_every_layer_of_the_map():
    text = (ROOT / "pyproject.toml").read_text()
    layers = re.search(r"layers = \[(.*?)\]", text, re.S).group(1)
    named = set(re.findall(r"[a-z_]+", layers))
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert named == modules | packages


def _function_level_imports(path):
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("carseg"):
                    found.append(f"{path.relative_to(ROOT)}:{inner.lineno} from {inner.module}")
                elif isinstance(inner, ast.Import) and any(a.name.startswith("carseg") for a in inner.names):
                    found.append(f"{path.relative_to(ROOT)}:{inner.lineno} import carseg...")
    return found


def test_no_carseg_import_hides_inside_a_function():
    found = [hit for p in PACKAGE.rglob("*.py") if p not in LAZY_IMPORTS_ALLOWED for hit in _function_level_imports(p)]
    assert found == []


def test_the_readme_layout_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed_dirs = re.findall(r"^(carseg/[a-z_]+/)", layout, re.M)
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if path.name == "__init__.py":
            continue
        if path.parent == PACKAGE:
            assert f"carseg/{path.name}" in layout, f"{rel} is missing from the README's Layout section"
        else:
            assert f"carseg/{path.parent.name}/" in listed_dirs, f"{rel.parent} is missing from the Layout section"
            section = layout.split(f"carseg/{path.parent.name}/", 1)[1].split("\ncarseg/", 1)[0]
            assert path.name in section, f"{rel} is missing from the README's Layout section"
    for name in re.findall(r"\b([a-z_]+\.py)\b", layout):
        assert any(p.name == name for p in ROOT.glob("**/*.py") if ".venv" not in p.parts), f"{name} does not exist"


def test_a_quick_test_may_not_train_or_spawn():
    """This test is not marked slow, so the guard of tests/conftest.py stops what slow tests alone may do."""
    with pytest.raises(pytest.fail.Exception, match="not marked slow"):
        subprocess.run(["true"])
    with pytest.raises(pytest.fail.Exception, match=r"Trainer.fit"):
        pl.Trainer(logger=False).fit(None)


@pytest.mark.slow
def test_a_slow_test_may_spawn():
    assert subprocess.run(["true"]).returncode == 0
