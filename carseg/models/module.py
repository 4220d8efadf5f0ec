"""SegmentationModule: a binary segmentation LightningModule (model, loss, optimiser, IoU/Dice)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchmetrics import MaxMetric
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _config(value: Any) -> Any:
    """Plain containers for configs, so that checkpoints hold no OmegaConf objects."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


class SegmentationModule(pl.LightningModule):
    """Cars vs background. Takes uint8 images (N, 3, H, W) of any size and returns logits (N, 1, H, W).

    `net`, `loss`, `optimizer` and `scheduler` are Hydra configs (`_target_` dicts), kept in the
    checkpoint's hyper-parameters so that `load_from_checkpoint(path)` needs nothing else.
    """

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
        pad_multiple: int = 32,
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
        self.logit_threshold = math.log(threshold / (1 - threshold))
        self.train_iou = BinaryJaccardIndex(validate_args=False)
        self.val_iou = BinaryJaccardIndex(validate_args=False)
        self.val_dice = BinaryF1Score(validate_args=False)
        self.val_iou_best = MaxMetric()
        self.test_iou = BinaryJaccardIndex(validate_args=False)
        self.test_dice = BinaryF1Score(validate_args=False)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Normalise, pad to a multiple of `pad_multiple` where the architecture needs it (FPN, DeepLabV3+;
        U-Net takes any size) or `pad_always` asks for it (1918 -> 1920), run the network, crop back."""
        x = (image.float() - self.mean) / self.std
        h, w = x.shape[-2:]
        needs_pad = getattr(self.net, "requires_divisible_input_shape", True) or self.hparams.get("pad_always", False)
        m = self.hparams.pad_multiple if needs_pad else 1
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
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
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/iou", self.train_iou, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_iou.reset()
        self.val_dice.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits, pred, target = self._step(batch)
        self.val_iou.update(pred, target)
        self.val_dice.update(pred, target)
        n = target.shape[0]
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/iou", self.val_iou, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val/dice", self.val_dice, on_epoch=True, batch_size=n)
        return {"loss": loss, "probs": logits.detach().float().sigmoid()} if batch_idx == 0 else {"loss": loss}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_iou_best(self.val_iou.compute())
        self.log("val/iou_best", self.val_iou_best.compute(), prog_bar=False, sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, _, pred, target = self._step(batch)
        self.test_iou.update(pred, target)
        self.test_dice.update(pred, target)
        n = target.shape[0]
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("test/iou", self.test_iou, on_epoch=True, batch_size=n)
        self.log("test/dice", self.test_dice, on_epoch=True, batch_size=n)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer, params=[p for p in self.parameters() if p.requires_grad])
        if not self.hparams.scheduler:
            return optimizer
        cfg = dict(self.hparams.scheduler)
        interval = cfg.pop("interval", "step")
        make = instantiate(cfg, _partial_=True)
        kwargs = {}
        if "total_steps" in inspect.signature(make).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = make(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
