"""`carseg predict`: masks, cut-outs, composites and Kaggle submissions for files and folders of photos."""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress

from carseg.data.io import read_image
from carseg.data.rle import rle_encode
from carseg.errors import CarsegError
from carseg.inference.background import composite, cutout, load_background
from carseg.inference.predictor import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def list_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found in folders (JPEG/PNG, sorted); anything else is an error."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            try:
                found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError as err:
                raise CarsegError(f"{item}: the folder cannot be read ({err.strerror})") from err
            if not found:
                raise CarsegError(f"{item}: no JPEG or PNG files in this folder")
            files += found
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise CarsegError(f"{item}: not a JPEG or PNG file; pass photos of cars (.jpg, .jpeg, .png)")
            files.append(item)
        else:
            raise CarsegError(f"{item}: no such file or folder")
    return files


def _prefetch(paths: Sequence[Path], depth: int = 8) -> Iterator[tuple[Path, np.ndarray]]:
    """Decode ahead in a thread pool, at most `depth` images in flight."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[tuple[Path, Future]] = deque()
        it = iter(paths)
        for path in it:
            pending.append((path, pool.submit(read_image, path)))
            if len(pending) >= depth:
                break
        while pending:
            path, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read_image, nxt)))
            yield path, future.result()


def predict(
    inputs: Sequence[str | Path],
    predictor: Predictor,
    out: str | Path | None = None,
    background: str | None = None,
    feather: float = 0.0,
    submission: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> int:
    """Predict every input; write `<stem>_mask.png`, `<stem>_cutout.png` (and `<stem>_composite.jpg`
    with a background) into `out`, and/or `img,rle_mask` rows into `submission`. Returns the count.
    Files are written as each image finishes, so an interruption keeps everything done so far."""
    if out is None and submission is None:
        raise CarsegError("nothing to write: give --out DIR and/or --submission FILE")
    paths = list_inputs(inputs)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    writer, handle = None, None
    if submission is not None:
        Path(submission).parent.mkdir(parents=True, exist_ok=True)
        handle = open(submission, "w", newline="")  # noqa: SIM115 - closed in finally
        writer = csv.writer(handle)
        writer.writerow(["img", "rle_mask"])
    images: dict[Path, np.ndarray] = {}

    def decoded() -> Iterator[tuple[Path, np.ndarray]]:
        for path, image in _prefetch(paths):
            images[path] = image
            yield path, image

    done = 0
    try:
        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task(f"predicting {len(paths)} images", total=len(paths))
            for path, mask in predictor.batched(decoded(), batch_size):
                image = images.pop(path)
                if out_dir is not None:
                    Image.fromarray(mask * 255).save(out_dir / f"{path.stem}_mask.png")
                    Image.fromarray(cutout(image, mask, feather)).save(out_dir / f"{path.stem}_cutout.png")
                    if background is not None:
                        bg = load_background(background, image.shape[:2])
                        comp = composite(image, mask, bg, feather)
                        Image.fromarray(comp).save(out_dir / f"{path.stem}_composite.jpg", quality=95)
                if writer is not None:
                    writer.writerow([path.name, rle_encode(mask)])
                    handle.flush()
                done += 1
                bar.advance(task)
    finally:
        if handle is not None:
            handle.close()
    return done
