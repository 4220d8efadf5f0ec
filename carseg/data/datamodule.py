"""CarvanaDataModule: the Carvana layout (real or the embedded synthetic set) as Lightning loaders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from carseg import console
from carseg.data.cache import build_cache, is_cached, load_pair
from carseg.data.carvana import Record, extract_kaggle_zips, read_car_list, scan, split_by_car
from carseg.data.checks import Problem, check_records
from carseg.data.io import image_size, read_image, read_mask, resize_pair
from carseg.data.synthetic import SynthSpec, is_complete, write_synthetic
from carseg.data.transforms import build_pipeline
from carseg.errors import CarsegError
from carseg.processes import worker_init


class CarvanaDataset(Dataset):
    """Image/mask pairs resized to `size`, augmented, as uint8 image (3, H, W) and float mask (1, H, W).

    With `soft_masks` the mask holds the car's share of each pixel (0..1) instead of 0/1.
    """

    def __init__(
        self,
        records: Sequence[Record],
        size: tuple[int, int],
        transforms: Sequence[Any] = (),
        cache_root: Path | None = None,
        reduced_decode: bool = True,
        soft_masks: bool = False,
    ):
        self.records = list(records)
        self.reduced_decode = reduced_decode
        self.size = size
        self.soft = soft_masks
        self.pipeline = build_pipeline(transforms)
        self.cache_root = cache_root

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        if self.cache_root is not None:
            image, mask = load_pair(self.cache_root, self.size, record, self.soft)
        else:
            full = image_size(record.image)
            image = read_image(record.image, self.size if self.reduced_decode else None, full)
            mask = read_mask(record, full)
            if mask.shape != full:
                raise CarsegError(f"{record.mask or record.image}: mask is {mask.shape}, image is {full} (H, W)")
            image, mask = resize_pair(image, mask, self.size, self.soft)
        out = self.pipeline(image=image, mask=mask)
        target = torch.from_numpy(np.ascontiguousarray(out["mask"])).unsqueeze(0).float()
        return {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "mask": target / 255 if self.soft else target,
            "name": record.image.stem,
        }


class CarvanaDataModule(pl.LightningDataModule):
    """Train/val loaders over a Carvana-layout folder, split by car id.

    With `synthetic` set, the folder is the embedded synthetic set, written on first use. Kaggle's zip
    files in `data_dir` are extracted once. Every pair is checked at setup (headers only: missing or
    truncated files, size mismatch, non-RGB modes, EXIF rotation); bad pairs stop the run with one
    message listing them, or with `skip_bad` are left out with a warning.

    Progressive resizing: `size_schedule` lists stages, each a first epoch and a training size
    ([{epoch: 0, size: [160, 240]}, {epoch: 10, size: [320, 480]}]); validation always runs at
    `image_size`, the size the model is used at. It needs `trainer.reload_dataloaders_every_n_epochs=1`.
    `soft_masks` trains on the car's share of each pixel where a mask is shrunk, instead of a 0/1 mask
    (validation masks stay 0/1).
    """

    def __init__(
        self,
        data_dir: str,
        image_size: Sequence[int] = (160, 240),
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        mask_source: str = "auto",
        val_fraction: float = 0.15,
        val_cars: Sequence[str] | None = None,
        val_cars_file: str | None = None,
        exclude_cars_file: str | None = None,
        fold: int | None = None,
        num_folds: int = 5,
        seed: int = 42,
        train_transforms: Sequence[Any] | None = None,
        synthetic: dict[str, int] | None = None,
        cache: bool = False,
        cache_dir: str | None = None,
        check_inputs: bool = True,
        skip_bad: bool = False,
        size_schedule: Sequence[dict[str, Any]] | None = None,
        soft_masks: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["train_transforms"], logger=False)  # image_size goes into checkpoints
        if len(image_size) != 2 or min(image_size) < 32:
            raise CarsegError(f"datamodule.image_size={list(image_size)}: give [height, width], each at least 32")
        if batch_size < 1:
            raise CarsegError(f"datamodule.batch_size={batch_size}: must be at least 1")
        self.data_dir = Path(data_dir)
        self.size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.mask_source = mask_source
        self.val_fraction = val_fraction
        self.val_cars = list(val_cars) if val_cars else None
        self.val_cars_file = val_cars_file
        self.exclude_cars_file = exclude_cars_file
        self.fold, self.num_folds = fold, num_folds
        self.seed = seed
        self.cache, self.check_inputs, self.skip_bad = cache, check_inputs, skip_bad
        self.cache_root = Path(cache_dir) if cache_dir else self.data_dir
        self.train_transforms = list(train_transforms or [])
        self.synth = SynthSpec(**synthetic) if synthetic else None
        self.soft_masks = soft_masks
        self.size_schedule = self._parse_schedule(size_schedule)
        by_time = any(isinstance(stage, Mapping) and "time" in stage for stage in size_schedule or [])
        self._schedule_key = "time" if by_time else "epoch"
        # the share of the time budget spent at the last epoch's end (set by the TimeBudget callback)
        self.time_progress = 0.0
        self.train_set: CarvanaDataset | None = None
        self.val_set: CarvanaDataset | None = None
        self._train_loader: DataLoader | None = None

    @staticmethod
    def _parse_schedule(schedule: Any) -> list[tuple[float, tuple[int, int]]]:
        """[(start, (H, W))] sorted by start, from [{epoch: 0, size: [H, W]}, ...], {epoch: [H, W]} or
        [{time: 0, size: [H, W]}, {time: 0.3, size: ...}] (start: an epoch, or a share of the time budget)."""
        if isinstance(schedule, Mapping):
            schedule = [{"epoch": k, "size": v} for k, v in schedule.items()]
        out, keys = [], set()
        for stage in schedule or []:
            try:
                key = "time" if "time" in stage else "epoch"
                start, size = (float if key == "time" else int)(stage[key]), stage["size"]
                hw = (int(size[0]), int(size[1]))
                ok = start >= 0 and len(size) == 2 and min(hw) >= 32 and not ("time" in stage and "epoch" in stage)
                ok = ok and (key == "epoch" or start < 1)
            except (TypeError, ValueError, IndexError, KeyError):
                ok = False
            if not ok:
                raise CarsegError(
                    f"datamodule.size_schedule: {stage} is not valid; give a list of stages "
                    "[{epoch: 0, size: [160, 240]}, {epoch: 10, size: [320, 480]}] (sizes at least 32), or "
                    "with a time budget (callbacks=time_budget) [{time: 0, size: ...}, {time: 0.3, size: ...}] "
                    "(the share of the budget, 0 to 1, after which the stage starts)"
                )
            keys.add(key)
            out.append((start, hw))
        if len(keys) > 1:
            raise CarsegError("datamodule.size_schedule: give every stage an `epoch` or every stage a `time`, not both")
        out.sort()
        if out and out[0][0] != 0:
            raise CarsegError("datamodule.size_schedule: the first stage must start at epoch 0 (or time 0)")
        return out

    @property
    def schedule_by_time(self) -> bool:
        """Whether the size schedule's stages start at shares of a time budget (else at epochs)."""
        return self._schedule_key == "time"

    def train_size(self, epoch: int, time_progress: float | None = None) -> tuple[int, int]:
        """The training size at `epoch` (the schedule's, or `image_size`); a time schedule reads
        `time_progress` (default: the share of the budget spent, as the TimeBudget callback last set it)."""
        now = epoch if not self.schedule_by_time else (self.time_progress if time_progress is None else time_progress)
        size = self.size
        for start, scheduled in self.size_schedule:
            if now >= start:
                size = scheduled
        return size

    def _cache_keys(self) -> set[tuple[tuple[int, int], bool]]:
        """(size, soft) of every cache the run reads: each training size, and `image_size` for validation."""
        sizes = {s for _, s in self.size_schedule} or {self.size}
        return {(s, self.soft_masks) for s in sizes} | {(self.size, False)}

    def prepare_data(self) -> None:
        """Write the synthetic set, extract zips, build the cache: once (Lightning calls this on one process)."""
        if self.synth is not None and not is_complete(self.data_dir, self.synth):
            console.info(f"writing the embedded synthetic data set to {self.data_dir} (first use)")
            write_synthetic(self.data_dir, self.synth)
        if self.data_dir.is_dir():
            for target in extract_kaggle_zips(self.data_dir):
                console.info(f"extracted {target} in {self.data_dir}")
        if self.cache:
            records = self._good_records()
            for size, soft in sorted(self._cache_keys()):
                if not is_cached(self.cache_root, size, records, soft):
                    build_cache(self.cache_root, size, records, soft=soft)

    def _good_records(self) -> list[Record]:
        records = scan(self.data_dir, self.mask_source)
        problems = check_records(records) if self.check_inputs else []
        if problems:
            self._report(problems)
            bad = {p.path for p in problems}
            records = [r for r in records if r.image not in bad and r.mask not in bad]
        return records

    def _report(self, problems: list[Problem]) -> None:
        files = sorted({str(p) for p in problems})
        shown = "\n  ".join(files[:30]) + (f"\n  ... and {len(files) - 30} more" if len(files) > 30 else "")
        if not self.skip_bad:
            raise CarsegError(
                f"{len(files)} problem(s) with the input files in {self.data_dir}:\n  {shown}\n"
                "Fix or remove these files, or set datamodule.skip_bad=true to train without them"
            )
        rank_zero_warn(f"carseg: skipping {len(files)} bad input file(s) (datamodule.skip_bad=true):\n  {shown}")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        records = self._good_records()
        if self.exclude_cars_file:
            excluded = set(read_car_list(self.exclude_cars_file, "datamodule.exclude_cars_file"))
            records = [r for r in records if r.car_id not in excluded]
        val_cars = self.val_cars or (read_car_list(self.val_cars_file) if self.val_cars_file else None)
        train, val = split_by_car(records, self.val_fraction, self.seed, val_cars, self.fold, self.num_folds)
        cache_root = self.cache_root if self.cache else None
        self.train_set = CarvanaDataset(
            train, self.train_size(0), self.train_transforms, cache_root, soft_masks=self.soft_masks
        )
        self.val_set = CarvanaDataset(val, self.size, cache_root=cache_root)

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise CarsegError("the data module was used before setup(); call datamodule.setup('fit') first")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            worker_init_fn=worker_init,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """The training loader at this epoch's size; a new one (new workers) only when the size changes."""
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        changes = len({s for _, s in self.size_schedule}) > 1
        if changes and trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            raise CarsegError(
                "datamodule.size_schedule changes the training size: set "
                "trainer.reload_dataloaders_every_n_epochs=1 so that each epoch gets its size"
            )
        clocks = [c for c in (trainer.callbacks if trainer is not None else []) if hasattr(c, "time_progress")]
        if self.schedule_by_time and not clocks:
            raise CarsegError(
                "datamodule.size_schedule starts its stages at shares of a time budget: add the budget "
                "(callbacks.time_budget.minutes=...) or give the stages as epochs"
            )
        size = self.train_size(epoch)
        if self.train_set is None or self._train_loader is None or self.train_set.size != size:
            if self._train_loader is not None:
                console.info(f"epoch {epoch}: training size {size[0]}x{size[1]}")
            if self.train_set is not None:
                self.train_set.size = size
            self._train_loader = self._loader(self.train_set, self.batch_size, shuffle=True)  # checks setup
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
