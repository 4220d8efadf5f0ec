"""Where `carseg predict` writes, decided before any photo is read: output paths checked, one name per input
that no other input shares, no input and no file carseg did not write ever written over, and every file it
writes marked as its own, so that a rerun skips it and never reads it as a photo.

The naming rule: a photo's outputs are `<stem>_mask.png`, `<stem>_cutout.png` (`<stem>_composite.jpg`);
where several inputs share a stem (letter case aside), or where such a name is taken by an input or by a
file carseg did not write, `<name with extension>_...` (`car.jpg_mask.png`), then with its folders in front
(`a__car.jpg_mask.png`), and as a last resort with the input's number (`car.jpg~3_mask.png`)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image, PngImagePlugin

from carseg.errors import CarsegError

MARK = "carseg-output"  # a PNG text key and a JPEG comment on every file `predict` writes
SUFFIXES = ("_mask.png", "_cutout.png", "_composite.jpg")


def text_file(path: Path, mode: str = "r") -> TextIO:
    """A CSV file opened as text whose rows may hold any file name, UTF-8 or not (its bytes are kept)."""
    return open(path, mode, newline="", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115


def output_names(base: str, background: str | None) -> list[str]:
    """The file names of one photo's outputs, for its output name `base`."""
    return [base + s for s in (SUFFIXES if background is not None else SUFFIXES[:2])]


def looks_like_output(path: Path) -> bool:
    """Whether a file's name is that of a `predict` output (cheap: its name only)."""
    return path.name.lower().endswith(SUFFIXES)


def is_output(path: Path) -> bool:
    """Whether the file was written by `carseg predict` (its header carries the mark)."""
    try:
        with Image.open(path) as im:
            return im.info.get(MARK) == "1" or im.info.get("comment") == MARK.encode()
    except Exception:  # noqa: BLE001 - unreadable, not an image, a loop: not ours
        return False


def save_options(fmt: str) -> dict:
    """The keyword arguments that mark a saved PNG or JPEG as carseg's output."""
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(MARK, "1")
        return {"pnginfo": info}
    return {"comment": MARK}


def _candidates(path: Path, index: int) -> list[str]:
    """Names from the shortest to the longest: stem, name, then with more and more of its folders."""
    parts = [p for p in path.parent.parts if p not in ("/", "", ".", "..")]
    names = [path.stem, path.name]
    for depth in range(1, len(parts) + 1):
        names.append("__".join([*parts[-depth:], path.name]))
    names.append(f"{names[-1]}~{index + 1}")
    return names


def unique_names(photos: Sequence[Path], out_dir: Path | None, background: str | None) -> list[str]:
    """Each photo's output name (the module's naming rule): no two inputs share one (letter case aside), and
    none of a photo's output files is an input or a file in `out_dir` that carseg did not write."""
    inputs = {os.path.normcase(os.path.abspath(p)) for p in photos}
    level = [0] * len(photos)
    candidates = [_candidates(p, i) for i, p in enumerate(photos)]
    foreign: dict[str, bool] = {}

    def taken(base: str) -> bool:
        if out_dir is None:
            return False
        for name in output_names(base, background):
            target = out_dir / name
            if os.path.normcase(os.path.abspath(target)) in inputs:
                return True
            if name not in foreign:
                foreign[name] = os.path.lexists(target) and not is_output(target)
            if foreign[name]:
                return True
        return False

    while True:
        groups: dict[str, list[int]] = defaultdict(list)
        for i in range(len(photos)):
            groups[candidates[i][level[i]].casefold()].append(i)
        changed = False
        for members in groups.values():
            for i in members:
                last = level[i] == len(candidates[i]) - 1
                if not last and (len(members) > 1 or taken(candidates[i][level[i]])):
                    level[i] += 1
                    changed = True
        if not changed:
            return [candidates[i][level[i]] for i in range(len(photos))]


def row_names(photos: Sequence[Path], names: Sequence[str]) -> list[str]:
    """The image names of Kaggle rows: each photo's file name, or its output name where inputs share one."""
    count: dict[str, int] = defaultdict(int)
    for p in photos:
        count[p.name] += 1
    return [p.name if count[p.name] == 1 else n for p, n in zip(photos, names, strict=True)]


def check_folder(flag: str, folder: Path) -> None:
    """`folder` is, or can be made, a writable folder; else a CarsegError naming `flag` and the fix."""
    for above in [folder, *folder.parents]:
        if os.path.lexists(above) and not above.is_dir():
            where = "is" if above == folder else f"is inside {above}, which is"
            raise CarsegError(f"{flag} {folder}: {where} a file, not a folder; give a folder's path")
        if above.is_dir():
            if not os.access(above, os.W_OK | os.X_OK):
                raise CarsegError(f"{flag} {folder}: {above} is not writable; give a folder you can write to")
            return


def check_file(flag: str, path: Path) -> None:
    """`path` can be written as a file (not a folder, its folder writable); else a CarsegError naming `flag`."""
    if path.is_dir():
        raise CarsegError(f"{flag} {path}: is a folder; give a file's path (e.g. {path / 'submission.csv'})")
    check_folder(flag, path.parent if str(path.parent) else Path("."))


def check_outputs(out: str | Path | None, submission: str | Path | None, review: str | Path | None = None) -> None:
    """Every output path of a `predict` run checked, before a photo is read or a model loaded."""
    if out is None and submission is None:
        raise CarsegError("nothing to write: give --out DIR and/or --submission FILE")
    if out is not None:
        check_folder("--out", Path(out))
    if submission is not None:
        check_file("--submission", Path(submission))
    if review is not None:
        check_file("--review", Path(review))
