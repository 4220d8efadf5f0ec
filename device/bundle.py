"""Pack what an offline GPU machine needs to run `make device-check`: wheels and real photos.

Run here with carseg's environment (`make device-bundle`). The GPU machine's image (device/image-packages.txt)
has Python 3.12, torch, Lightning, timm and more, but no network; the bundle carries, as cp312 manylinux
wheels at the versions installed here, every distribution carseg needs that the image lacks (and the build
tools for an editable install of carseg), plus the 8 validation cars of sample_full and as many full-size
training cars as fit the size budget, merged into one Carvana-layout folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
PYTHON_VERSION = "3.12"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]
MARKER_ENV = {"python_version": PYTHON_VERSION, "python_full_version": f"{PYTHON_VERSION}.3", "extra": ""}
# the build backend of an editable install of carseg (pyproject.toml's build-system), which pip's isolated
# build environment takes from the bundle
BUILD_TOOLS = {"setuptools": "80.9.0", "wheel": "0.45.1"}
# distributions the check leaves out, with whatever only they need: it logs as CSV, not to W&B
LEFT_OUT = {"wandb"}
# carseg's extras the check runs (the service's and ONNX Runtime's benchmarks and tests)
CHECK_EXTRAS = ("serve", "onnx")
VALIDATION_CARS = "sample_full"
TRAINING_CARS = "train_full_32"


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = HERE / "image-packages.txt") -> set[str]:
    """The distributions the GPU machine's image has."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return {normalize(line) for line in lines if line and not line.startswith("#")}


def needed(root: str = "carseg", have: set[str] | None = None) -> dict[str, str]:
    """Name → installed version of every distribution `root` needs (its requirements with CHECK_EXTRAS,
    theirs without extras, transitively, on Python 3.12) that `have` (default: the image's) lacks, plus the
    build tools."""
    have = image_packages() if have is None else have
    found: dict[str, str] = {}
    todo = [root]
    while todo:
        current = todo.pop()
        extras = ("", *CHECK_EXTRAS) if current == root else ("",)
        for text in metadata.requires(current) or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({**MARKER_ENV, "extra": e}) for e in extras):
                continue
            name = normalize(req.name)
            if name in have or name in found or name in LEFT_OUT:
                continue
            found[name] = metadata.version(name)
            todo.append(name)
    for tool, fallback in BUILD_TOOLS.items():
        found[tool] = metadata.version(tool) if _installed(tool) else fallback
    return dict(sorted(found.items()))


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch_wheel(name: str, version: str, wheels: Path) -> Path:
    """The cp312 manylinux (or pure-Python) wheel of name==version in `wheels`, downloaded, or built from the
    sdist where none is published (antlr4-python3-runtime 4.9.3)."""
    stem = normalize(name).replace("-", "_")
    for wheel in wheels.glob("*.whl"):
        head = wheel.name.split("-")
        if normalize(head[0]).replace("-", "_") == stem and head[1] == version:
            return wheel
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    got = _pip(
        "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
        "--implementation", "cp", *platforms, "-d", str(wheels), f"{name}=={version}",
    )  # fmt: skip
    if got.returncode != 0:
        with tempfile.TemporaryDirectory() as tmp:
            built = _pip("wheel", "--quiet", "--no-deps", "-w", tmp, f"{name}=={version}")
            made = list(Path(tmp).glob("*.whl"))
            if built.returncode != 0 or not made or not made[0].name.endswith("-py3-none-any.whl"):
                raise SystemExit(
                    f"device bundle: no cp312 manylinux wheel of {name}=={version}, and building one failed:\n"
                    f"{got.stderr.strip()}\n{built.stderr.strip()}"
                )
            shutil.move(str(made[0]), wheels / made[0].name)
    return fetch_wheel(name, version, wheels)


def _copy_cars(src: Path, dst: Path, cars: list[str]) -> int:
    """Copy these cars' photos and masks from Carvana-layout `src` into `dst`; return the bytes written."""
    written = 0
    for car in cars:
        for part, pattern in (("train", f"{car}_*.jpg"), ("train_masks", f"{car}_*_mask.gif")):
            for file in sorted((src / part).glob(pattern)):
                shutil.copy2(file, dst / part / file.name)
                written += file.stat().st_size
    rows = [r for r in _read_rows(src / "train_masks.csv") if r[0].split("_")[0] in set(cars)]
    with open(dst / "train_masks.csv", "a", newline="") as f:
        csv.writer(f).writerows(rows)
    return written + sum(len(",".join(r)) + 1 for r in rows)


def _read_rows(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def _car_bytes(src: Path, car: str) -> int:
    files = [*(src / "train").glob(f"{car}_*.jpg"), *(src / "train_masks").glob(f"{car}_*_mask.gif")]
    return sum(f.stat().st_size for f in files) + 140_000  # and about this much of train_masks.csv


def _cars(folder: Path) -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in (folder / "train").glob("*.jpg")})


def build_bundle(out: Path, carvana: Path, budget_mib: float = 55.0) -> dict:
    """Write wheels/ and carvana/ into `out` and a manifest.json describing them; return the manifest."""
    wheels, data = out / "wheels", out / "carvana"
    wheels.mkdir(parents=True, exist_ok=True)
    wanted = needed()
    kept = {fetch_wheel(name, version, wheels).name for name, version in wanted.items()}
    for stale in wheels.glob("*.whl"):
        if stale.name not in kept:
            stale.unlink()
    used = sum(w.stat().st_size for w in wheels.glob("*.whl"))
    shutil.rmtree(data, ignore_errors=True)
    val_src, train_src = carvana / VALIDATION_CARS, carvana / TRAINING_CARS
    if not val_src.is_dir():
        raise SystemExit(f"device bundle: {val_src} not found; pass --carvana, the folder of {VALIDATION_CARS}/")
    for part in ("train", "train_masks"):
        (data / part).mkdir(parents=True)
    shutil.copy2(val_src / "metadata.csv", data / "metadata.csv")
    (data / "train_masks.csv").write_text("img,rle_mask\n")
    used += (data / "metadata.csv").stat().st_size
    val_cars = _cars(val_src)
    used += _copy_cars(val_src, data, val_cars)
    train_cars: list[str] = []
    budget = int(budget_mib * 2**20)
    for car in _cars(train_src) if train_src.is_dir() else []:
        if car in val_cars or used + _car_bytes(train_src, car) > budget:
            continue
        used += _copy_cars(train_src, data, [car])
        train_cars.append(car)
    manifest = {
        "python": PYTHON_VERSION,
        "wheels": sorted(kept),
        "requirements": wanted,
        "validation_cars": val_cars,
        "training_cars": train_cars,
        "mib": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".device", help="the bundle folder (ignored by git)")
    parser.add_argument("--carvana", default="../shared/carvana", help=f"holds {VALIDATION_CARS}/ and {TRAINING_CARS}/")
    parser.add_argument("--budget-mib", type=float, default=55.0, help="size limit of the whole bundle")
    args = parser.parse_args()
    manifest = build_bundle(Path(args.out), Path(args.carvana), args.budget_mib)
    print(
        f"device bundle: {args.out}: {len(manifest['wheels'])} wheels, {len(manifest['validation_cars'])} validation"
        f" and {len(manifest['training_cars'])} training cars, {manifest['mib']} MiB"
    )


if __name__ == "__main__":
    main()
