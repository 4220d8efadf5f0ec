"""Input checks for Carvana-layout files: cheap header checks at setup, full ones in `carseg data check`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.progress import track

from carseg.data.carvana import Record, read_rle_table
from carseg.data.rle import rle_decode

EXIF_ORIENTATION = 0x0112
# Bytes a complete file ends with (trailing padding after them is tolerated).
TRAILERS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".gif": b"\x3b", ".png": b"IEND\xaeB`\x82"}


@dataclass(frozen=True)
class Problem:
    """One bad input file and what is wrong with it."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def is_truncated(path: Path) -> bool:
    """Whether the file lacks the bytes its format ends with (it was cut off while being written or copied)."""
    trailer = TRAILERS.get(path.suffix.lower())
    if trailer is None:
        return False
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 64))
        tail = fh.read().rstrip(b"\x00")
    return not tail.endswith(trailer)


def check_image(path: Path) -> tuple[tuple[int, int] | None, list[Problem]]:
    """Header checks of one photo: readable, complete, 8-bit RGB, not EXIF-rotated. Returns ((H, W), problems)."""
    try:
        with Image.open(path) as im:
            size = (im.size[1], im.size[0])
            mode = im.mode
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError) as err:
        return None, [Problem(path, f"unreadable image ({err})")]
    problems = []
    if mode != "RGB":
        problems.append(
            Problem(path, f"colour mode {mode}, expected 8-bit RGB; convert it (e.g. Pillow .convert('RGB'))")
        )
    if orientation not in (1, None):
        problems.append(
            Problem(path, f"EXIF orientation {orientation}: the pixels are stored rotated; save it upright")
        )
    if is_truncated(path):
        problems.append(Problem(path, "truncated file (no end marker)"))
    return size, problems


def check_mask_header(record: Record, size: tuple[int, int]) -> list[Problem]:
    """Header checks of one mask against its image size."""
    if record.rle is not None:
        numbers = record.rle.split()
        if len(numbers) % 2:
            return [Problem(record.image, "run-length code in train_masks.csv has an odd number of values")]
        if numbers:
            starts = np.asarray(numbers[0::2], dtype=np.int64)
            ends = starts + np.asarray(numbers[1::2], dtype=np.int64) - 1
            if starts.min() < 1 or ends.max() > size[0] * size[1]:
                return [Problem(record.image, f"run-length code runs outside the {size[1]}x{size[0]} image")]
        return []
    if record.mask is None:
        return [Problem(record.image, "no row in train_masks.csv")]
    if not record.mask.is_file():
        return [Problem(record.mask or record.image, "mask missing (expected train_masks/<id>_<NN>_mask.gif)")]
    try:
        with Image.open(record.mask) as im:
            mask_size = (im.size[1], im.size[0])
    except (OSError, SyntaxError, ValueError) as err:
        return [Problem(record.mask, f"unreadable mask ({err})")]
    problems = []
    if mask_size != size:
        problems.append(Problem(record.mask, f"mask is {mask_size[1]}x{mask_size[0]}, image is {size[1]}x{size[0]}"))
    if is_truncated(record.mask):
        problems.append(Problem(record.mask, "truncated file (no end marker)"))
    return problems


def check_records(records: Iterable[Record]) -> list[Problem]:
    """Header-level checks of every pair (fast: no pixel decoding)."""
    problems: list[Problem] = []
    for record in records:
        size, image_problems = check_image(record.image)
        problems += image_problems
        if size is not None:
            problems += check_mask_header(record, size)
    return problems


def check_dataset(data_dir: Path, records: Sequence[Record], progress: bool = True) -> tuple[int, list[Problem]]:
    """Full checks: headers, full decode of every file, and GIF vs run-length code where both exist."""
    rles = read_rle_table(data_dir / "train_masks.csv") if (data_dir / "train_masks.csv").is_file() else {}
    problems = check_records(records)
    bad = {p.path for p in problems}
    iterator: Iterable[Record] = records
    if progress:
        iterator = track(records, description=f"checking {len(records)} pairs", transient=True)
    compared = 0
    for record in iterator:
        if record.image in bad or record.mask in bad:
            continue
        if cv2.imread(str(record.image), cv2.IMREAD_UNCHANGED) is None:
            problems.append(Problem(record.image, "cannot be decoded"))
            continue
        if record.mask is None:
            continue
        try:
            with Image.open(record.mask) as im:
                gif = np.asarray(im) > 0
        except (OSError, SyntaxError, ValueError) as err:
            problems.append(Problem(record.mask, f"cannot be decoded ({err})"))
            continue
        code = rles.get(record.image.name)
        if code is not None:
            compared += 1
            try:
                rle = rle_decode(code, gif.shape).astype(bool)
            except ValueError as err:
                problems.append(Problem(record.image, f"train_masks.csv: {err}"))
                continue
            differ = int((rle != gif).sum())
            if differ:
                problems.append(Problem(record.mask, f"differs from train_masks.csv in {differ} pixels"))
    return compared, problems
