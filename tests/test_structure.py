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


def _layout_sections() -> dict[str, str]:
    """The README's Layout section as {"carseg/<package>/" or "carseg/<module>.py": the text that describes it}."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    current = None
    for line in layout.splitlines():
        named = re.match(r"^(?:top|base)?\s*(carseg/[a-z_]+(?:/|\.py))", line)  # a line that starts an entry
        if named:
            current = named.group(1)
            sections[current] = line[named.end() :]
        elif current is not None:
            sections[current] += " " + line
    return sections


def test_the_readme_layout_matches_the_tree():
    sections = _layout_sections()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        key = f"carseg/{path.name}" if path.parent == PACKAGE else f"carseg/{path.parent.name}/"
        assert key in sections, f"{key} is missing from the README's Layout section"
        if path.parent != PACKAGE:
            assert path.name in sections[key], f"{path.relative_to(ROOT)} is missing from the README's Layout section"
    for key, text in sections.items():
        assert (ROOT / key).exists(), f"the README's Layout section names {key}, which does not exist"
        folder = ROOT / key if key.endswith("/") else None
        for name in re.findall(r"\b([a-z_]+\.py)\b", text) if folder else []:
            assert (folder / name).is_file(), f"the README's Layout section names {key}{name}, which does not exist"


def test_a_quick_test_may_not_train_or_spawn():
    """This test is not marked slow, so the guard of tests/conftest.py stops what slow tests alone may do."""
    with pytest.raises(pytest.fail.Exception, match="not marked slow"):
        subprocess.run(["true"])
    with pytest.raises(pytest.fail.Exception, match=r"Trainer.fit"):
        pl.Trainer(logger=False).fit(None)


@pytest.mark.slow
def test_a_slow_test_may_spawn():
    assert subprocess.run(["true"]).returncode == 0
