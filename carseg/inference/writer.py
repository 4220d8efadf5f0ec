"""Writing predictions as they come, so that a stopped run keeps everything it finished and a rerun of the same
command skips it: files are written under a temporary name and renamed; Kaggle rows and failures go to one
part file per process and run, flushed row by row, and are merged in input order at the end.

`<out>/`                     `<name>_mask.png`, `<name>_cutout.png`, `<name>_composite.jpg` (with a background);
                             `<name>`: the photo's output name (`carseg.inference.outputs`), each file marked as
                             carseg's and carrying the photo's colour profile
`<submission>`               Kaggle's `img,rle_mask` CSV, every finished photo once, in input order
`<submission>.parts/`        the part files while a run is unfinished
`failures.csv`               photos that could not be read, with the reason (in `<out>/`, else beside the CSV)
"""

from __future__ import annotations

import csv
import heapq
import io
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter

from carseg.data.rle import rle_encode
from carseg.inference.background import composite, cutout, load_background
from carseg.inference.outputs import output_names, save_options, text_file
from carseg.inference.review import part_path as review_part
from carseg.inference.review import row as review_row

FAILURES = "failures.csv"
csv.field_size_limit(1 << 30)  # a full-size run-length code is a long field


def atomic_save(image: Image.Image, path: Path, icc: bytes | None = None, **kwargs: Any) -> None:
    """Save under a temporary name, then rename: a file either is complete or is not there. It is marked as
    carseg's output and carries the colour profile `icc` where given."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fmt = Image.registered_extensions()[path.suffix.lower()]
    if icc:
        kwargs["icc_profile"] = icc
    image.save(tmp, format=fmt, **save_options(fmt), **kwargs)
    os.replace(tmp, path)


def output_files(out_dir: Path, name: str, background: str | None) -> list[Path]:
    """The files one photo gets in `out_dir`, for its output name (`unique_names`)."""
    return [out_dir / n for n in output_names(name, background)]


def parts_dir(submission: Path) -> Path:
    return submission.with_name(submission.name + ".parts")


def failures_path(out_dir: Path | None, submission: Path | None) -> Path:
    if out_dir is not None:
        return out_dir / FAILURES
    assert submission is not None
    return submission.with_name(f"{submission.stem}.{FAILURES}")


def _rows(path: Path) -> Iterator[list[str]]:
    """The complete rows of a CSV being written row by row, read line by line (memory stays bounded); a last
    row cut off by a stop (no line end) is left out."""
    with text_file(path) as fh:
        yield from csv.reader(line for line in fh if line.endswith("\n"))


def submitted_names(submission: Path) -> set[str]:
    """Photo names that already have a Kaggle row: in the finished CSV or in the parts of an unfinished run."""
    names: set[str] = set()
    if submission.is_file():
        names |= {row[0] for row in _rows(submission) if row and row[0] != "img"}
    if parts_dir(submission).is_dir():
        for part in parts_dir(submission).glob("*.csv"):
            names |= {row[1] for row in _rows(part) if len(row) == 3}
    return names


def merge_submission(submission: Path, order: dict[str, int]) -> int:
    """Merge the finished CSV (if any) and every part file into `submission`, in input order (`order`: photo
    name → index), each photo once; streamed, so memory stays bounded. Returns the row count."""
    sources: list[Iterator[tuple[int, str, str]]] = []
    if submission.is_file():
        sources.append(
            (order[r[0]], r[0], r[1]) for r in _rows(submission) if len(r) == 2 and r[0] != "img" and r[0] in order
        )
    parts = sorted(parts_dir(submission).glob("*.csv")) if parts_dir(submission).is_dir() else []
    sources += [((int(r[0]), r[1], r[2]) for r in _rows(p) if len(r) == 3 and r[1] in order) for p in parts]
    tmp = submission.with_name(f".{submission.name}.tmp-{os.getpid()}")
    count, last = 0, None
    with text_file(tmp, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["img", "rle_mask"])
        for index, name, code in heapq.merge(*sources):
            if index != last:
                writer.writerow([name, code])
                count, last = count + 1, index
    os.replace(tmp, submission)
    for part in parts:
        part.unlink()
    if parts:
        parts_dir(submission).rmdir()
    return count


def merge_failures(path: Path, parts: Sequence[Path]) -> int:
    """`failures.csv` (path, reason) from this run's failure parts, in input order; returns the count."""
    rows = sorted((int(r[0]), r[1], r[2]) for p in parts if p.is_file() for r in _rows(p) if len(r) == 3)
    for part in parts:
        part.unlink(missing_ok=True)
    if not rows:
        path.unlink(missing_ok=True)
        return 0
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with text_file(tmp, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows([(p, reason) for _, p, reason in rows])
    os.replace(tmp, path)
    return len(rows)


class OutputWriter(BasePredictionWriter):
    """Writes each batch's masks, cut-outs, composites and Kaggle rows as soon as it is predicted (every process
    its own photos), and each unreadable photo to this process's failure part."""

    def __init__(
        self,
        run_id: str,
        out_dir: Path | None,
        submission: Path | None,
        background: str | None = None,
        feather: float = 0.0,
        shadow: float = 0.0,
        threads: int = 0,
        review: Path | None = None,
        names: Sequence[str] | None = None,
        row_names: Sequence[str] | None = None,
    ):
        super().__init__(write_interval="batch")
        self.run_id, self.out_dir, self.submission = run_id, out_dir, submission
        # each photo's output name and Kaggle row name, by input index (None: its stem and its file name)
        self.names, self.row_names = names, row_names
        self.background, self.feather, self.shadow = background, feather, shadow
        self.rows: TextIO | None = None
        self.failures: TextIO | None = None
        self.written = 0
        # threads > 0: photos are encoded and written on that many threads, off the predict loop (PNG and RLE
        # encoding release the GIL), at most 2 x threads photos waiting; 0: in the loop
        self.threads = int(threads)
        self.review = review  # review.csv: each photo's quality, through one part file per process
        self.reviews: TextIO | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def failure_part(self, rank: int) -> Path:
        where = failures_path(self.out_dir, self.submission)
        return where.with_name(f".{where.name}.{self.run_id}-rank{rank}")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        rank = trainer.global_rank
        if self.submission is not None:
            parts_dir(self.submission).mkdir(parents=True, exist_ok=True)
            part = parts_dir(self.submission) / f"{self.run_id}-rank{rank:03d}.csv"
            self.rows = text_file(part, "a")  # noqa: SIM115 - closed in teardown
        self.failures = text_file(self.failure_part(rank), "a")  # noqa: SIM115 - closed in teardown
        if self.review is not None:
            self.reviews = text_file(review_part(self.review, self.run_id, rank), "a")  # noqa: SIM115

    def _drain(self, keep: int = 0) -> None:
        """Wait until at most `keep` photos are waiting to be written, and write their rows in the photos'
        order (so each part file stays in input order); a write's error is raised here."""
        while len(self._pending) > keep:
            self._row(self._pending.popleft().result())

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every process has written all its photos before the first one merges their rows."""
        self._drain()
        for handle in (self.rows, self.failures, self.reviews):
            if handle is not None:
                handle.flush()
        trainer.strategy.barrier("carseg-predict-written")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._pool is not None:  # an interrupted run: photos being written are finished, none is cut,
            self._pool.shutdown(wait=True, cancel_futures=True)  # and the finished ones get their rows
            while self._pending and not self._pending[0].cancelled() and self._pending[0].exception() is None:
                self._row(self._pending.popleft().result())
            self._pool, self._pending = None, deque()
        for handle in (self.rows, self.failures, self.reviews):
            if handle is not None:
                handle.close()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, list],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for item, mask, alpha, quality in prediction["done"]:
            args = (item["index"], Path(item["path"]), item["image"], mask, alpha, quality, item)
            if self.threads <= 0:
                self.write_photo(*args)
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="carseg-write")
            self._pending.append(self._pool.submit(self.write_photo, *args))
            self._drain(keep=2 * self.threads)  # memory stays bounded when the disk is slower than the model
        for index, path, reason in prediction["failed"]:
            assert self.failures is not None
            self.failures.write(_csv_line([index, path, reason]))
            self.failures.flush()

    def write_photo(
        self,
        index: int,
        path: Path,
        image: np.ndarray,
        mask: np.ndarray,
        alpha: np.ndarray | None = None,
        quality: dict[str, Any] | None = None,
        item: dict[str, Any] | None = None,
    ) -> tuple[str | None, str | None]:
        """The 0/1 mask, the cut-out and composite through the model's alpha (times the photo's own, and with
        its colour profile: `item`'s "opacity" and "icc"); the Kaggle row (written here in the loop; on
        threads, returned, and written by the loop in the photos' order)."""
        item = item or {}
        opacity, icc = item.get("opacity"), item.get("icc")
        if self.out_dir is not None:
            name = self.names[index] if self.names is not None else path.stem
            files = output_files(self.out_dir, name, self.background)
            atomic_save(Image.fromarray(mask * 255), files[0])
            atomic_save(Image.fromarray(cutout(image, mask, self.feather, alpha, opacity)), files[1], icc)
            if self.background is not None:
                bg = load_background(self.background, image.shape[:2])
                picture = composite(image, mask, bg, self.feather, self.shadow, alpha, opacity)
                atomic_save(Image.fromarray(picture), files[2], icc, quality=95)
        row_name = self.row_names[index] if self.row_names is not None else path.name
        line = _csv_line([index, row_name, rle_encode(mask)]) if self.rows is not None else None
        scored = _csv_line(review_row(index, path, quality)) if quality is not None else None
        if self.threads <= 0:
            self._row((line, scored))
        return line, scored

    def _row(self, lines: tuple[str | None, str | None]) -> None:
        """A photo's Kaggle row and review row, once its files are written (a row never names a photo
        without them)."""
        line, scored = lines
        if self.rows is not None and line is not None:
            self.rows.write(line)  # one write: a row is whole or cut
            self.rows.flush()
        if self.reviews is not None and scored is not None:
            self.reviews.write(scored)
            self.reviews.flush()
        self.written += 1


def _csv_line(values: list[Any]) -> str:
    """One CSV row as text."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()
