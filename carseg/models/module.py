"""SegmentationModule: a binary segmentation LightningModule (model, loss, optimiser, IoU/Dice)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchmetrics import MaxMetric
from torchmetrics.classification import BinaryF1Score

from carseg.models.metrics import BinaryIoU, BoundaryF1
from carseg.models.padding import DEFAULT_MULTIPLE, effective_multiple, pad_to_multiple
from carseg.models.schedules import time_progress_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def threshold_logit(threshold: float) -> float:
    """The logit a probability threshold corresponds to (logit > it  <=>  probability > threshold)."""
    p = min(max(float(threshold), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _config(value: Any) -> Any:
    """Plain containers for configs, so that checkpoints hold no OmegaConf objects."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


class SegmentationModule(pl.LightningModule):
    """Cars vs background. Takes uint8 images (N, 3, H, W) of any size and returns logits (N, 1, H, W).

    `net`, `loss`, `optimizer` and `scheduler` are Hydra configs (`_target_` dicts), kept in the
    checkpoint's hyper-parameters so that `load_from_checkpoint(path)` needs nothing else.
    """

    # what it logs, any of which can be the run's `optimized_metric`
    LOGGED_METRICS = (
        "val/iou",
        "val/dice",
        "val/boundary_f1",
        "val/loss",
        "val/iou_best",
        "train/loss_epoch",
        "train/iou",
    )

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = True,
        compile: bool = False,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        threshold: float = 0.5,
        pad_multiple: int = DEFAULT_MULTIPLE,
        pad_always: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters({k: _config(v) for k, v in locals().items() if k not in ("self", "__class__")})
        self.net = instantiate(self.hparams.net)
        self.loss_fn = instantiate(self.hparams.loss)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        # Metrics get boolean predictions (logit > logit(threshold)): no sigmoid, no input validation per step.
        self.logit_threshold = threshold_logit(threshold)
        self.train_iou = BinaryIoU()
        self.val_iou = BinaryIoU()
        self.val_dice = BinaryF1Score(validate_args=False)
        self.val_boundary_f1 = BoundaryF1(tolerance=2)
        self.val_iou_best = MaxMetric()

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    @property
    def pad_multiple(self) -> int:
        """The multiple this model pads its input's sides to (1: none); see `carseg.models.padding`."""
        return effective_multiple(self.net, self.hparams.pad_multiple, self.hparams.get("pad_always", False))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Normalise, pad by the padding rule (`carseg.models.padding`), run the network, crop back."""
        x = (image.float() - self.mean) / self.std
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)[..., :h, :w]

    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, boolean prediction, integer target); a soft target counts as car from 0.5."""
        logits = self(batch["image"])
        target = batch["mask"]
        loss = self.loss_fn(logits, target)
        with torch.no_grad():
            pred = logits.detach() > self.logit_threshold
        return loss, logits, pred, (target >= 0.5).int()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, pred, target = self._step(batch)
        self.train_iou.update(pred, target)
        n = target.shape[0]
        # the epoch means accumulate on the device; a step's value is read (a host-device sync) only on the steps
        # the loggers write, not on every step
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/iou", self.train_iou, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        if self._logs_this_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether the loggers write this training step (Lightning's `log_every_n_steps`); True outside a
        Trainer."""
        trainer = self._trainer
        every = getattr(trainer, "log_every_n_steps", 1) if trainer is not None else 1
        return every <= 1 or (self.global_step + 1) % every == 0

    def on_validation_epoch_start(self) -> None:
        self.val_iou.reset()
        self.val_dice.reset()
        self.val_boundary_f1.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits, pred, target = self._step(batch)
        self.val_iou.update(pred, target)
        self.val_dice.update(pred, target)
        self.val_boundary_f1.update(pred, target)
        n = target.shape[0]
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/iou", self.val_iou, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val/dice", self.val_dice, on_epoch=True, batch_size=n)
        self.log("val/boundary_f1", self.val_boundary_f1, on_epoch=True, prog_bar=True, batch_size=n)
        return {"loss": loss, "probs": logits.detach().float().sigmoid()} if batch_idx == 0 else {"loss": loss}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_iou_best(self.val_iou.compute())
        self.log("val/iou_best", self.val_iou_best.compute(), prog_bar=False, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer, params=[p for p in self.parameters() if p.requires_grad])
        if not self.hparams.scheduler:
            return optimizer
        cfg = dict(self.hparams.scheduler)
        interval = cfg.pop("interval", "step")
        make = instantiate(cfg, _partial_=True)
        kwargs = {}
        parameters = inspect.signature(make).parameters
        if "total_steps" in parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        if "time_progress" in parameters:
            kwargs["time_progress"] = time_progress_of(self.trainer)
        scheduler = make(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
