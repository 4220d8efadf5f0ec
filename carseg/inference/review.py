"""The review queue of a prediction run: every photo's quality score, worst first (`review.csv`), and the
photos under a threshold copied with their cut-outs into `review/` for an editor, with a contact sheet."""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from carseg.inference.outputs import text_file
from carseg.models.quality import FEATURES

# review: 1 where the score is under the calibration's own threshold (`QualityModel.review_below`)
COLUMNS = ["image", "path", "quality", "calibrated", "target", "review", *FEATURES]
SHEET_TILE = (320, 214)  # a contact sheet's tile (width, height): a 1918x1280 photo's shape
SHEET_COLUMNS = 4
SHEET_MAX = 48


def part_path(review: Path, run_id: str, rank: int) -> Path:
    """One process's rows of one run, beside `review` until they are merged."""
    return review.with_name(f".{review.name}.{run_id}-rank{rank}")


def parts_of(review: Path) -> list[Path]:
    """Every part file beside `review`: this run's processes' and those of runs stopped before they merged."""
    return sorted(review.parent.glob(f".{review.name}.*-rank*"))  # part_path's names


def row(index: int, path: Path, quality: dict[str, Any]) -> list[Any]:
    """A part file's row: the input index, then COLUMNS."""
    signals = [round(float(quality[name]), 5) for name in FEATURES]
    return [
        index,
        path.name,
        str(path),
        quality["score"],
        int(bool(quality["calibrated"])),
        quality["target"],
        int(bool(quality["review"])),
        *signals,
    ]


def _read(path: Path, with_index: bool) -> list[list[str]]:
    if not path.is_file():
        return []
    with text_file(path) as fh:
        rows = [r for r in csv.reader(line for line in fh if line.endswith("\n")) if r]
    if with_index:
        return [r[1:] for r in rows if len(r) == len(COLUMNS) + 1]
    return [r for r in rows[1:] if len(r) == len(COLUMNS)]


def merge_review(review: Path, parts: Sequence[Path]) -> list[dict[str, Any]]:
    """`review` rewritten from its earlier rows (a resumed run) and `parts`: each photo once, the lowest
    quality first; the parts removed. Returns the rows."""
    by_path: dict[str, list[str]] = {r[1]: r for r in _read(review, False)}
    for part in parts:
        by_path.update((r[1], r) for r in _read(part, True))
    rows = sorted(by_path.values(), key=lambda r: (float(r[2]), r[0]))
    tmp = review.with_name(f".{review.name}.tmp-{os.getpid()}")
    with text_file(tmp, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, review)
    for part in parts:
        part.unlink(missing_ok=True)
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def send_to_review(
    rows: Sequence[dict[str, Any]],
    below: float,
    out_dir: Path | None,
    folder: Path,
    names: dict[str, str] | None = None,
) -> list[Path]:
    """Copy the photos scoring under `below` (and their cut-outs from `out_dir`, when written) into `folder`,
    with `contact_sheet.png` of their cut-outs (or photos); the photos copied. `names`: each photo path's
    output name (default: its stem), which also names its copy, so that no two copies share a name."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [r for r in rows if float(r["quality"]) < below]
    copied, tiles = [], []
    for r in chosen:
        photo = Path(r["path"])
        name = (names or {}).get(r["path"], photo.stem)
        target = folder / (name + photo.suffix if name != photo.stem else photo.name)
        shutil.copy2(photo, target)
        copied.append(target)
        cut = out_dir / f"{name}_cutout.png" if out_dir is not None else None
        if cut is not None and cut.is_file():
            shutil.copy2(cut, folder / cut.name)
        tiles.append((cut if cut is not None and cut.is_file() else photo, photo.name, float(r["quality"])))
    if tiles:
        contact_sheet(tiles[:SHEET_MAX], folder / "contact_sheet.png")
    return copied


def contact_sheet(tiles: Sequence[tuple[Path, str, float]], out: Path) -> Path:
    """A grid of pictures (cut-outs on a light checkerboard), each labelled with its name and score."""
    w, h = SHEET_TILE
    label = 18
    rows = math.ceil(len(tiles) / SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * w, rows * (h + label)), "white")
    board = Image.new("RGB", (w, h), (236, 236, 236))
    draw_board = ImageDraw.Draw(board)
    for y in range(0, h, 16):
        for x in range((y // 16) % 2 * 16, w, 32):
            draw_board.rectangle([x, y, x + 15, y + 15], fill=(250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for i, (path, name, score) in enumerate(tiles):
        x, y = (i % SHEET_COLUMNS) * w, (i // SHEET_COLUMNS) * (h + label)
        with Image.open(path) as im:
            im = im.convert("RGBA")
            im.thumbnail((w, h))
        tile = board.copy()
        tile.paste(im, ((w - im.width) // 2, (h - im.height) // 2), im)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + h + 2), f"{name}  {score:.3f}", fill=(20, 20, 20))
    sheet.save(out, optimize=True)
    return out
