"""The edge refiner: a small network that places the car's edge at full resolution.

The coarse model sees the photo at its training size (320×480 for 1918×1280 photos); its upsampled
probabilities put the edge within a few full-size pixels. The refiner sees the full-size photo and those
probabilities around the edge and returns new logits there. It works on space-to-depth blocks (each 4×4
pixel block becomes 16 channels of one position, as in sub-pixel super-resolution), so it keeps every
full-size pixel at a quarter of the cost, and returns its 16 sub-pixel logits per block with a pixel
shuffle. With `residual`, its output is a correction added to the coarse logit, from a last layer that
starts at zero: untrained, it is the identity, so it can only learn to help.

It is trained on crops of full-size photos along the coarse model's own predicted edge, with that model's
own probabilities as the input (`carseg.data.edge_crops` with a coarse source), so it learns the errors
the coarse model really makes (shadows, wheels, chrome, paint close to the backdrop) rather than invented
ones. A share of the crops (`simulated_fraction`), and all of them when no coarse model is given, get an
input made from the true mask as a coarse model would give it (`simulate_coarse`): shrunk to the coarse
size, blurred, its level moved by smooth noise, sharpened or softened, upsampled again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from carseg.errors import CarsegError
from carseg.masks import band_mask, edge_weights
from carseg.models.metrics import BinaryIoU, BoundaryF1
from carseg.models.module import IMAGENET_MEAN, IMAGENET_STD
from carseg.models.schedules import time_progress_of, warmup_cosine

# the space-to-depth factor (the coarse model's usual reduction, 1918x1280 -> 480x320)
BLOCK = 4


def _conv(c_in: int, c_out: int, dilation: int = 1, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class EdgeRefiner(nn.Module):
    """(photo, coarse probability) at full size → car logits at full size.

    Input: uint8-range RGB (N, 3, H, W) and probabilities (N, 1, H, W), H and W multiples of 8. The coarse
    probabilities are an input (so trained, it learned the edge's place several times faster than from a
    prior alone); with `residual` the output is also added to their logit, through a last layer that starts
    at zero.
    With `context` (the default) it is a two-level network with a receptive field of about 90 full-size
    pixels and about 8,000 multiply-adds per full-size pixel at width 48. Without, it is two convolutions on
    the blocks and a 1×1 head: a receptive field of 20 pixels and about 3,000 multiply-adds per pixel at
    width 48. It can then only move the edge to what the photo shows next to it, which carries over to cars
    it never saw; with 90 pixels of context it also learns the training cars' own shapes. Without context,
    `layers` sets its 3x3 convolutions on the blocks (each sees 4 px further), `mlp` adds 1x1 layers after
    them (capacity without reach) and `stem` a 3x3 convolution of that many channels at full size, whose
    features join the photo before the blocks are formed (pixel-level edges the blocks would otherwise have
    to find in 64 raw values).
    """

    def __init__(
        self,
        width: int = 48,
        residual: bool = False,
        context: bool = True,
        layers: int = 2,
        mlp: int = 0,
        stem: int = 0,
    ):
        super().__init__()
        if layers < 1 or mlp < 0 or stem < 0:
            raise CarsegError(
                f"refiner.module: layers={layers}, mlp={mlp}, stem={stem}; give layers >= 1, mlp and stem >= 0"
            )
        self.width, self.residual, self.context = width, bool(residual), bool(context)
        self.layers, self.mlp, self.stem_width = int(layers), int(mlp), int(stem)
        # the cut-out's alpha near the edge is sigmoid(alpha_sharpness x logit) (`fit_alpha_sharpness`)
        self.alpha_sharpness = 1.0
        # an optional 3x3 convolution at full size, whose features join the photo before the blocks are formed
        self.stem = _conv(4, stem) if stem else None
        c_in = (4 + stem) * BLOCK * BLOCK
        convs = [_conv(c_in, width)] + [_conv(width, width) for _ in range(layers - 1)]
        # 1x1 layers add capacity without widening what it sees
        convs += [_conv(width, width, kernel=1) for _ in range(mlp)]
        self.enc1 = nn.Sequential(*convs)
        if self.context:
            self.enc2 = nn.Sequential(
                _conv(width, width, stride=2), _conv(width, width, dilation=2), _conv(width, width)
            )
            self.dec1 = nn.Sequential(_conv(2 * width, width), _conv(width, width))
            self.head = nn.Conv2d(width, BLOCK * BLOCK, 3, padding=1)
        else:
            self.head = nn.Conv2d(width, BLOCK * BLOCK, 1)
        if self.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = coarse.float()
        x = torch.cat([(image.float() - self.mean) / self.std, coarse * 2 - 1], dim=1)
        if self.stem is not None:
            x = torch.cat([x, self.stem(x)], dim=1)
        x = F.pixel_unshuffle(x, BLOCK)
        f1 = self.enc1(x)
        if self.context:
            up = F.interpolate(self.enc2(f1), size=f1.shape[-2:], mode="bilinear", align_corners=False)
            f1 = self.dec1(torch.cat([f1, up], dim=1))
        out = F.pixel_shuffle(self.head(f1), BLOCK)
        if self.residual:
            out = out + torch.logit(coarse.clamp(1e-4, 1 - 1e-4))
        return out


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample of (N, 1, h, w) with its own sigma (N,) in pixels (0: unchanged)."""
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernels = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)
    n = x.shape[0]
    padded = F.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="replicate")  # (1, N, h, w)
    out = F.conv2d(padded, kernels.view(n, 1, 1, -1), groups=n)
    out = F.conv2d(out, kernels.view(n, 1, -1, 1), groups=n)
    return out.transpose(0, 1)


def simulate_coarse(mask: torch.Tensor, generator: torch.Generator | None = None, factor: int = BLOCK) -> torch.Tensor:
    """Probabilities (N, 1, H, W) such as a coarse model working at 1/`factor` size gives, made from true
    0/1 masks (N, 1, H, W): the car's share of each coarse pixel, blurred (sigma up to 1.5 coarse pixels),
    its level moved by smooth noise (the edge shifts by up to about 1.5 coarse pixels, more where the
    mask is blurred), sharpened or softened, then upsampled bilinearly."""
    n, _, h, w = mask.shape
    dev = mask.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

    low = F.avg_pool2d(mask.float(), factor)
    low = _gaussian_blur(low, rand(n) * 1.5)
    grid = max(2, math.ceil(low.shape[-1] / 16))
    noise = (rand(n, 1, grid, grid) * 2 - 1) * (rand(n, 1, 1, 1) * 0.45)
    low = low + F.interpolate(noise, size=low.shape[-2:], mode="bicubic", align_corners=False)
    sharpness = 2 + rand(n, 1, 1, 1) * 14
    low = torch.sigmoid((low - 0.5) * sharpness)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


# the cut-out's alpha is sigmoid(sharpness x logit) near the edge; the sharpness is chosen from these
ALPHA_SHARPNESS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)


@torch.no_grad()
def fit_alpha_sharpness(
    net: EdgeRefiner, batches: Iterable[dict[str, torch.Tensor]], radius: int = 3
) -> tuple[float, dict[float, float]]:
    """The sharpness (of ALPHA_SHARPNESS) whose alpha, sigmoid(sharpness x refined logit), is closest to the
    true 0/1 mask (mean absolute difference) within `radius` pixels of the true edge of crops that carry
    the coarse model's probabilities; returns it and the error of each. A model that is as sure as it is
    right gets a high sharpness (an alpha near its 0/1 mask), one whose doubt marks its mistakes a lower one."""
    device = next(net.parameters()).device
    totals, count = dict.fromkeys(ALPHA_SHARPNESS, 0.0), 0
    for batch in batches:
        mask = batch["mask"].to(device)
        logits = net(batch["image"].to(device), batch["coarse"].to(device)).float()
        near = band_mask(mask, radius)
        count += int(near.sum())
        for k in ALPHA_SHARPNESS:
            totals[k] += float((torch.sigmoid(k * logits) - mask).abs()[near].sum())
    errors = {k: v / max(count, 1) for k, v in totals.items()}
    return min(errors, key=errors.get), errors


class RefinerModule(pl.LightningModule):
    """Trains an EdgeRefiner on crops of full-size photos (`carseg.data.edge_crops`): image, true mask and,
    when the crops come with one, the coarse model's own probabilities (`coarse`).

    A crop without them, and a `simulated_fraction` share of those with them, gets an input made from its
    true mask (`simulate_coarse`). The loss is binary cross-entropy over the band the refiner will be used
    on at prediction (the pixels within `band` of the coarse mask's edge), where pixels within
    `edge_radius` of the true edge weigh `edge_weight` times. Validation (on the coarse model's own
    probabilities where given) logs the car IoU within that band, of the refiner (`refiner/val_iou`) and of
    its coarse input (`refiner/val_iou_coarse`), and the boundary F1 at 2 px of both.
    """

    def __init__(
        self,
        width: int = 48,
        band: int = 16,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.03,
        edge_weight: float = 5.0,
        edge_radius: int = 3,
        residual: bool = False,
        simulated_fraction: float = 0.0,
        context: bool = True,
        layers: int = 2,
        mlp: int = 0,
        stem: int = 0,
    ):
        super().__init__()
        if not 0 <= simulated_fraction <= 1:
            raise CarsegError(f"refiner.module.simulated_fraction={simulated_fraction}: give a share from 0 to 1")
        for key, value in (("residual", residual), ("context", context)):
            if not isinstance(value, bool):  # bool("no") is True: a word must not switch it on unseen
                raise CarsegError(f"refiner.module.{key}={value!r}: give true or false")
        self.save_hyperparameters()
        self.net = EdgeRefiner(width, residual, context, layers, mlp, stem)
        self.val_iou, self.val_iou_coarse = BinaryIoU(), BinaryIoU()
        self.val_boundary_f1, self.val_boundary_f1_coarse = BoundaryF1(tolerance=2), BoundaryF1(tolerance=2)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.net(image, coarse)

    def coarse_input(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None, simulated_fraction: float = 0.0
    ) -> torch.Tensor:
        """The coarse probabilities of a batch: its own (`coarse`), with a `simulated_fraction` share of the
        crops (all of them when it has none) made from the true mask instead."""
        mask = batch["mask"]
        if "coarse" not in batch:
            return simulate_coarse(mask, generator)
        coarse = batch["coarse"].float()
        if simulated_fraction > 0:
            pick = torch.rand(len(mask), generator=generator) < simulated_fraction
            if pick.any():
                coarse = coarse.clone()
                coarse[pick.to(coarse.device)] = simulate_coarse(mask[pick.to(mask.device)], generator)
        return coarse

    def _step(self, batch: dict[str, torch.Tensor], coarse: torch.Tensor) -> tuple:
        mask = batch["mask"]
        band = band_mask((coarse > 0.5).float(), self.hparams.band)
        logits = self(batch["image"], coarse).float()
        if not band.any():
            return logits.sum() * 0, logits, band
        # pixels near the true edge count `edge_weight` times: elsewhere in the band the answer is easy
        weight = edge_weights(mask, self.hparams.edge_weight, self.hparams.edge_radius)[band]
        losses = F.binary_cross_entropy_with_logits(logits[band], mask[band], reduction="none")
        return (losses * weight).sum() / weight.sum(), logits, band

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        coarse = self.coarse_input(batch, simulated_fraction=self.hparams.simulated_fraction)
        loss, *_ = self._step(batch, coarse)
        self.log("refiner/train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["mask"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._generator = torch.Generator().manual_seed(0)  # the same simulated inputs every epoch

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        coarse = self.coarse_input(batch, self._generator)
        loss, logits, band = self._step(batch, coarse)
        target = (batch["mask"] > 0.5).int()
        pred = logits > 0
        if band.any():  # a batch whose coarse input predicts no edge has no band to score
            self.val_iou.update(pred[band], target[band])
            self.val_iou_coarse.update((coarse > 0.5)[band], target[band])
        self.val_boundary_f1.update(pred, target)
        self.val_boundary_f1_coarse.update(coarse > 0.5, target)
        n = len(target)
        self.log("refiner/val_loss", loss, prog_bar=True, batch_size=n)
        self.log("refiner/val_iou", self.val_iou, prog_bar=True, batch_size=n)
        self.log("refiner/val_iou_coarse", self.val_iou_coarse, batch_size=n)
        self.log("refiner/val_boundary_f1", self.val_boundary_f1, prog_bar=True, batch_size=n)
        self.log("refiner/val_boundary_f1_coarse", self.val_boundary_f1_coarse, batch_size=n)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = warmup_cosine(
            optimizer,
            int(self.trainer.estimated_stepping_batches),
            warmup_fraction=self.hparams.warmup_fraction,
            time_progress=time_progress_of(self.trainer),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
