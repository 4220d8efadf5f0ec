"""Every third-party import of the package is declared, in the extra of the module that imports it; a missing
extra is one line naming it; uvicorn's private class that the server extends is still the one it knows."""

import ast
import functools
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest

from carseg.errors import CarsegError
from tests.helpers import ROOT

# modules that only an extra's users import (the rest of the package is the core install)
MODULE_EXTRAS = {
    "carseg/serving/": "serve",
    "carseg/bench/serve.py": "serve",
    "carseg/inference/export.py": "onnx",
    "carseg/bench/infer.py": "onnx",
}
# imports that are not distributions of their own name
PROVIDED_BY = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml", "multipart": "python-multipart"}
# what other declared packages bring along and carseg may import through them
TRANSITIVE = {
    "lightning_fabric": "pytorch-lightning",
    "lightning_utilities": "pytorch-lightning",
    "starlette": "fastapi",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """Distribution names by extra ("" for the core) from carseg's installed metadata."""
    by_extra: dict[str, set[str]] = {}
    for requirement in metadata.requires("carseg") or []:
        name = _norm(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        by_extra.setdefault(extra.group(1) if extra else "", set()).add(name)
    return by_extra


@functools.cache
def _packages() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distribution(module: str) -> str | None:
    """The declared distribution that provides a top-level module (None: the standard library or carseg)."""
    if module in sys.stdlib_module_names or module in ("carseg", "hydra_plugins", "__future__", "__main__"):
        return None
    if module in TRANSITIVE:
        return _norm(TRANSITIVE[module])
    if module in PROVIDED_BY:
        return _norm(PROVIDED_BY[module])
    found = _packages().get(module)
    return _norm(found[0]) if found else _norm(module)


def third_party_imports(path: Path) -> list[tuple[str, bool]]:
    """(distribution, imported at the module's top level) for each third-party import of a source file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            dist = _distribution(module.split(".")[0])
            if dist is not None:
                found.append((dist, id(node) in top))
    return found


def test_every_third_party_import_is_declared_in_its_modules_extra():
    extras = declared()
    core = extras[""]
    everything = set().union(*extras.values())
    problems = []
    for path in sorted([*(ROOT / "carseg").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        extra = next((e for prefix, e in MODULE_EXTRAS.items() if relative.startswith(prefix)), None)
        allowed_at_top = core | extras.get(extra, set())
        for dist, at_top in third_party_imports(path):
            if dist not in everything:
                problems.append(f"{relative}: imports {dist}, which pyproject.toml does not declare")
            elif at_top and dist not in allowed_at_top:
                problems.append(
                    f"{relative}: imports {dist} at the top, but it is in an extra; import it where it is used "
                    f"(carseg.extras.require) or list the module in MODULE_EXTRAS"
                )
    assert not problems, "\n".join(problems)


def test_the_core_install_is_the_designs_packages():
    core = declared()[""]
    design = {"torch", "pytorch-lightning", "hydra-core", "omegaconf", "timm", "albumentations", "torchmetrics"}
    assert design | {"wandb", "segmentation-models-pytorch"} <= core
    assert not core & {"fastapi", "uvicorn", "onnxruntime", "onnx", "tensorboard", "httpx", "six"}
    assert not any(_norm(r).startswith("torch") and "<" in r for r in metadata.requires("carseg") or [])


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    from carseg.extras import require

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    with pytest.raises(CarsegError, match=r"carseg serve needs fastapi.*pip install 'carseg\[serve\]'"):
        require("fastapi", "serve", "carseg serve")


def test_uvicorn_still_has_the_protocol_class_the_server_extends():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    version = metadata.version("uvicorn")
    used = ["connection_made", "data_received", "on_response_complete", "connection_lost", "handle_events"]
    missing = [name for name in used if not callable(getattr(H11Protocol, name, None))]
    assert not missing, (
        f"uvicorn {version}: H11Protocol lacks {missing}, which carseg/serving/server.py overrides; "
        "adapt LimitedH11Protocol to this release or hold uvicorn to the range in pyproject.toml"
    )
    import inspect

    source = inspect.getsource(H11Protocol)
    for attribute in ("self.conn", "self.connections", "self.transport", "self.loop", "self.cycle"):
        assert attribute in source, f"uvicorn {version}: H11Protocol no longer has {attribute}; see server.py"
