"""`carseg predict`: masks, cut-outs, composites and Kaggle submissions for files and folders of photos, through
Lightning's predict loop: one process, or several (`devices`, `num_nodes`: DDP on CPUs or GPUs), each
predicting its share of the photos once. A rerun of the same command skips what is complete."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader

from carseg import console
from carseg.errors import CarsegError
from carseg.inference.outputs import check_outputs, row_names, unique_names
from carseg.inference.photos import MAX_MEGAPIXELS, PhotoDataset, as_list, scan_inputs
from carseg.inference.prediction_module import PredictionModule
from carseg.inference.predictor import Predictor
from carseg.inference.review import merge_review, parts_of, send_to_review
from carseg.inference.writer import (
    OutputWriter,
    failures_path,
    merge_failures,
    merge_submission,
    output_files,
    submitted_names,
)
from carseg.processes import end_with_launcher, worker_init

RUN_ID_ENV = "CARSEG_PREDICT_RUN"  # shared by the processes of one run (DDP ranks inherit the environment)


@dataclass
class PredictionSummary:
    """What one `predict` call did."""

    photos: int  # inputs in all
    already_done: int  # complete before this run (skipped)
    predicted: int  # written by this process in this run
    failed: int  # could not be read (listed in `failures`)
    failures: Path | None
    submission_rows: int | None


def _complete(
    names: Sequence[str], rows: Sequence[str], out_dir: Path | None, submission: Path | None, background: str | None
) -> set:
    """Indices of the photos whose outputs are all there (files are written whole or not at all, and a file
    carseg did not write is never taken for one: `unique_names` names around it)."""
    done_names = submitted_names(submission) if submission is not None else None
    complete = set()
    for i, (name, row) in enumerate(zip(names, rows, strict=True)):
        files_done = out_dir is None or all(f.is_file() for f in output_files(out_dir, name, background))
        row_done = done_names is None or row in done_names
        if files_done and row_done:
            complete.add(i)
    return complete


class _StopOnSigterm(pl.Callback):
    """Lightning's predict loop does not stop on SIGTERM by itself: stop before the next batch."""

    def on_predict_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.received_sigterm:
            raise SystemExit(143)


# threads that encode and write a GPU run's outputs beside the model
WRITE_THREADS_ON_GPU = 4


def predict(
    inputs: Sequence[str | Path],
    predictor: Predictor,
    out: str | Path | None = None,
    background: str | None = None,
    feather: float = 0.0,
    submission: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
    on_error: str = "skip",
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    workers: int = 2,
    shadow: float = 0.0,
    write_threads: int | None = None,
    decode: str = "auto",
    review: str | Path | None = None,
    review_below: float | None = None,
    max_megapixels: float = MAX_MEGAPIXELS,
) -> PredictionSummary | None:
    """Predict every input; write `<name>_mask.png`, `<name>_cutout.png` (and `<name>_composite.jpg` with a
    background) into `out` (names: `carseg.inference.outputs`), and/or Kaggle's `img,rle_mask` rows into
    `submission`. Photos that cannot be read are listed in `failures.csv` (`on_error="skip"`) or stop the
    run (`"stop"`). The summary on the first process (None on the others)."""
    end_with_launcher()  # a rank started by the launcher ends with it
    check_outputs(out, submission, review)
    if devices < 1 or num_nodes < 1:
        raise CarsegError(f"--devices {devices} --num-nodes {num_nodes}: both must be at least 1")
    if not max_megapixels > 0:
        raise CarsegError(f"--max-megapixels {max_megapixels}: give a positive number")
    found = scan_inputs(inputs)
    paths = found.photos
    out_dir = Path(out) if out is not None else None
    csv_path = Path(submission) if submission is not None else None
    for folder in (out_dir, csv_path.parent if csv_path else None):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    launching = "LOCAL_RANK" not in os.environ  # DDP ranks started by Lightning have it
    if launching:
        os.environ[RUN_ID_ENV] = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        if found.earlier_outputs:
            console.info(
                f"{len(found.earlier_outputs)} files are outputs of an earlier run, not photos: left as they are"
            )
    run_id = os.environ[RUN_ID_ENV]
    names = unique_names(paths, out_dir, background)
    rows_named = row_names(paths, names)
    complete = _complete(names, rows_named, out_dir, csv_path, background)
    remaining = [i for i in range(len(paths)) if i not in complete]
    if shadow and background is None:
        raise CarsegError("--shadow darkens the ground of a composite: give --background too")
    if not 0 <= shadow <= 1:
        raise CarsegError(f"--shadow {shadow}: give a strength from 0 to 1 (0.5 when the flag stands alone)")
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    if decode not in ("auto", "cpu", "device"):
        raise CarsegError(f"--decode {decode}: choose auto (on the GPU when predicting on one), cpu or device")
    decode_here = decode == "device" or (decode == "auto" and on_gpu)  # else in the loader workers
    if write_threads is None:  # on a GPU the files are written beside the model; on CPUs the cores are busy
        write_threads = WRITE_THREADS_ON_GPU if on_gpu else 0
    if write_threads < 0:
        raise CarsegError(f"--write-threads {write_threads}: give 0 (write in the predict loop) or more")
    review_path = Path(review) if review is not None else None
    if review_below is not None and review_path is None:
        raise CarsegError(f"--review-below {review_below}: give --review FILE too (the queue's list)")
    if review_path is not None:
        review_path.parent.mkdir(parents=True, exist_ok=True)
    writer = OutputWriter(
        run_id,
        out_dir,
        csv_path,
        background,
        feather,
        shadow,
        threads=write_threads,
        review=review_path,
        names=names,
        row_names=rows_named,
    )
    if not remaining:  # parts of a run stopped after its last photo still get merged
        rows, failed = _finish(paths, rows_named, csv_path, writer, 1, review_below)
    else:
        if launching and complete:
            console.info(f"{len(complete)} of {len(paths)} photos are already done; predicting {len(remaining)}")
        for name in ("pytorch_lightning", "lightning_fabric"):  # device and tip lines: not news when predicting
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        try:
            trainer = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy="ddp" if devices * num_nodes > 1 else "auto",
                precision="32-true",  # the predictor chooses its own autocast
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=progress,
                callbacks=[writer, _StopOnSigterm()],
            )
        except MisconfigurationException as err:  # e.g. --accelerator gpu where no GPU is visible
            raise CarsegError(
                f"--accelerator {accelerator} --devices {devices} --num-nodes {num_nodes}: {err} Fix: ask for what "
                "this machine has (--accelerator cpu runs CPU processes; --devices at most the GPUs visible)"
            ) from None
        loader = DataLoader(
            PhotoDataset(paths, remaining, raw_jpeg=decode_here, max_megapixels=max_megapixels),
            batch_size=batch_size,
            num_workers=workers,
            worker_init_fn=worker_init,
            collate_fn=as_list,
            persistent_workers=False,
        )
        try:
            module = PredictionModule(predictor, on_error, decode_here=decode_here, assess=review_path is not None)
            trainer.predict(module, loader, return_predictions=False)
        except SystemExit:
            if trainer.is_global_zero:
                console.warning(
                    "prediction interrupted; what is written is complete. Run the same command again to predict "
                    "the rest"
                )
            raise
        finally:
            if trainer.is_global_zero:
                rows, failed = _finish(paths, rows_named, csv_path, writer, trainer.world_size, review_below)
        if not trainer.is_global_zero:
            return None
    failed_file = failures_path(out_dir, csv_path)
    return PredictionSummary(len(paths), len(complete), writer.written, failed, failed_file if failed else None, rows)


def _finish(
    paths: Sequence[Path],
    rows_named: Sequence[str],
    submission: Path | None,
    writer: OutputWriter,
    world: int,
    review_below: float | None = None,
) -> tuple[int | None, int]:
    """On the first process: merge the Kaggle rows, the review rows and this run's failures of every process;
    copy the photos under `review_below` for review; (rows, failures)."""
    order = {name: i for i, name in enumerate(rows_named)}
    rows = merge_submission(submission, order) if submission is not None else None
    if writer.review is not None:
        reviewed = merge_review(writer.review, parts_of(writer.review))
        if review_below is not None:
            folder = writer.review.parent / "review"
            names = dict(zip(map(str, paths), writer.names, strict=True)) if writer.names is not None else None
            sent = send_to_review(reviewed, review_below, writer.out_dir, folder, names)
            console.info(f"{len(sent)} of {len(reviewed)} photos score under {review_below:g}: copied to {folder}")
        console.info(f"quality of every photo, worst first: {writer.review}")
    where = failures_path(writer.out_dir, submission)
    failed = merge_failures(where, [writer.failure_part(r) for r in range(world)])
    for stale in where.parent.glob(f".{where.name}.*-rank*"):  # of runs killed before they could merge
        stale.unlink(missing_ok=True)
    return rows, failed
