"""Project callbacks: a few validation samples (image, true mask, prediction) each epoch; the wall time of each
epoch and training stage; training by the clock; a progress bar with the whole run's time left."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from carseg import console
from carseg.drawing import PREDICTION_COLOUR, TRUTH_COLOUR, overlay
from carseg.errors import CarsegError


class PredictionSamples(pl.Callback):
    """Saves `samples/epoch_NNN.png` (image | truth | prediction rows) and logs the samples to W&B."""

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1):
        self.num_samples = num_samples
        self.every_n_epochs = max(1, every_n_epochs)

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        n = min(self.num_samples, batch["image"].shape[0])
        images = batch["image"][:n].permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
        truth = batch["mask"][:n, 0].cpu().numpy() > 0.5
        pred = outputs["probs"][:n, 0].float().cpu().numpy() > pl_module.hparams.get("threshold", 0.5)
        names = batch.get("name", [str(i) for i in range(n)])[:n]
        rows = [
            np.hstack([img, overlay(img, t, TRUTH_COLOUR), overlay(img, p, PREDICTION_COLOUR)])
            for img, t, p in zip(images, truth, pred, strict=True)
        ]
        panel = np.vstack(rows)
        out = Path(trainer.default_root_dir) / "samples" / f"epoch_{trainer.current_epoch:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(panel).save(out)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb  # only with a W&B logger (a machine that logs as CSV may not have it)

                labels = {0: "background", 1: "car"}
                logger.experiment.log(
                    {
                        "val/samples": [
                            wandb.Image(
                                img,
                                caption=name,
                                masks={
                                    "ground_truth": {"mask_data": t.astype(np.uint8), "class_labels": labels},
                                    "prediction": {"mask_data": p.astype(np.uint8), "class_labels": labels},
                                },
                            )
                            for img, t, p, name in zip(images, truth, pred, names, strict=True)
                        ],
                        "trainer/global_step": trainer.global_step,
                    }
                )


class EpochTimes(pl.Callback):
    """The wall time of every epoch (training, validation, checkpoint writes: all it costs), its training size
    and images, and the sum per training size (the stages of progressive resizing), for the run's summary.

    The times travel in the checkpoints, so a resumed run reports the epochs of every process that worked on
    it; an epoch that a stop cut in two is counted once, with the time and images of both parts."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self._start: float | None = None
        self._epoch, self._size, self._images = 0, None, 0

    def _record(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self._start
        return {
            "epoch": self._epoch,
            "size": self._size,
            "images": self._images,
            "seconds": round(seconds, 1),
            "img/s": round(self._images / seconds, 2) if seconds > 0 else None,
        }

    def _close(self) -> None:
        if self._start is None:
            return
        self.epochs.append(self._record())
        self._start = None

    def state_dict(self) -> dict[str, Any]:
        """The finished epochs and the one under way up to now (what a run resumed from here has spent)."""
        under_way = [] if self._start is None else [{**self._record(), "until_checkpoint": True}]
        return {"epochs": [dict(e) for e in self.epochs] + under_way}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = [dict(e) for e in state_dict.get("epochs", [])]

    def _open(self, trainer: pl.Trainer) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        size = datamodule.train_size(trainer.current_epoch) if hasattr(datamodule, "train_size") else None
        self._epoch, self._size = trainer.current_epoch, list(size) if size is not None else None
        self._start, self._images = time.perf_counter(), 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        self._open(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._start is None:  # an epoch resumed part way: Lightning does not start it again
            self._open(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if isinstance(batch, dict) and "image" in batch:
            self._images += int(batch["image"].shape[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def stages(self) -> list[dict[str, Any]]:
        """Epochs, images and minutes per training size, in the order the sizes came."""
        stages: dict[str, dict[str, Any]] = {}
        epochs: dict[str, set[int]] = {}
        for row in self.epochs:
            key = "x".join(map(str, row["size"])) if row["size"] else "all"
            stage = stages.setdefault(key, {"size": key, "epochs": 0, "images": 0, "seconds": 0.0})
            epochs.setdefault(key, set()).add(row["epoch"])  # an epoch cut in two by a stop counts once
            stage["epochs"] = len(epochs[key])
            stage["images"] += row["images"]
            stage["seconds"] = round(stage["seconds"] + row["seconds"], 1)
        return [{**s, "minutes": round(s["seconds"] / 60, 2)} for s in stages.values()]


class TimeBudget(pl.Callback):
    """Training by the clock: `minutes` of training (from the first training batch's epoch, set-up excluded).

    - The learning-rate schedule reads `time_progress()` (see `carseg.models.schedules.warmup_cosine`), so
      the decay ends when the budget does, however fast the machine.
    - Stages of the data module's size schedule given as `{time: 0.3, size: [...]}` start with the first
      epoch that begins after that share of the budget: a slower machine gets fewer epochs of each stage.
    - When the budget is spent, training stops after the current batch; that last (partial) epoch is then
      validated and checkpointed like any other before the run ends.
    The trainer's own `max_epochs` / `max_time` still apply as outer limits.
    """

    def __init__(self, minutes: float):
        if not minutes or minutes <= 0:
            raise CarsegError(f"callbacks.time_budget.minutes={minutes}: give the training minutes, a number > 0")
        self.seconds = float(minutes) * 60
        self._start: float | None = None
        self._resume_spent = 0.0

    def time_progress(self) -> float:
        """The share of the budget spent (0 before training starts)."""
        return 0.0 if self._start is None else (time.monotonic() - self._start) / self.seconds

    def _tell_datamodule(self, trainer: pl.Trainer) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if hasattr(datamodule, "time_progress"):
            datamodule.time_progress = self.time_progress()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning keeps training to min_epochs=1 unless told otherwise; the budget may end within epoch 0
        if trainer.fit_loop.min_epochs == 1:
            trainer.fit_loop.min_epochs = 0
        self._start = time.monotonic() - self._resume_spent
        self._tell_datamodule(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        spent = self.time_progress() >= 1.0
        spent = trainer.strategy.reduce_boolean_decision(spent, all=False)  # one rank's clock stops them all
        if spent and not trainer.should_stop:
            trainer.should_stop = True  # Lightning validates (and so checkpoints) before it stops
            console.info(
                f"time budget of {self.seconds / 60:.1f} min spent at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}: validating and saving this epoch, then stopping"
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tell_datamodule(trainer)  # the next epoch's size follows the time spent

    def state_dict(self) -> dict[str, Any]:
        return {"spent_seconds": 0.0 if self._start is None else time.monotonic() - self._start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a resumed run continues the budget where it stopped
        self._resume_spent = float(state_dict.get("spent_seconds", 0.0))


class RunProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the whole run's time left beside the epoch's ("run 3:41 left"),
    from the first batches on: the time spent so far (validation included) over the share of the run's
    training steps done, so that a user knows at once whether to wait or to come back."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._fit_start: float | None = None
        self._first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._fit_start, self._first_step = time.monotonic(), trainer.global_step  # a resumed run: from here

    def time_left(self, trainer: pl.Trainer) -> float | None:
        """Seconds the run still needs by the rate so far (None before the first step or without an end)."""
        total = trainer.estimated_stepping_batches
        done = trainer.global_step - self._first_step
        if self._fit_start is None or done <= 0 or not math.isfinite(total):
            return None
        return (time.monotonic() - self._fit_start) / done * max(0.0, total - trainer.global_step)

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch).rstrip()
        left = self.time_left(self.trainer) if self._fit_start is not None else None
        if left is None:
            return f"{description} · run: estimating"
        minutes, seconds = divmod(int(left + 0.5), 60)
        return f"{description} · run {minutes}:{seconds:02d} left"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if self.progress is not None and self.train_progress_bar_id is not None and self.is_enabled:
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)
