"""The second training stage: the edge refiner, trained on the coarse model's own full-size probabilities
for full-size photos and written into the run's checkpoints, so that every tool that reads the checkpoint
(evaluate, predict, serve) refines its edges.

Its schedule is in steps (`refiner.max_steps`), so the same config gives the same refiner on any machine;
`refiner.minutes` adds a deadline for those who want one.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger

from carseg import console
from carseg.build import build
from carseg.data.edge_crops import CoarseSource
from carseg.errors import CarsegError
from carseg.hardware import autocast, inference_precision
from carseg.models.checkpoint import embed_refiner, load_checkpoint
from carseg.models.full_size import full_size_logits, module_logits
from carseg.models.module import threshold_logit
from carseg.models.refiner import RefinerModule, fit_alpha_sharpness
from carseg.training.callbacks import EpochTimes, TimeBudget

# training batches the cut-out's alpha sharpness is fitted on
ALPHA_FIT_BATCHES = 16
# where stage 2's coarse inputs come from
COARSE_SOURCES = ("model", "simulated")


def refiner_module(refiner: DictConfig) -> RefinerModule:
    """The RefinerModule of `refiner.module`; a key it does not take is one clear error."""
    try:
        return RefinerModule(**OmegaConf.to_container(refiner.module, resolve=True))
    except TypeError as err:
        raise CarsegError(f"refiner.module: {err}; see conf/refiner/edge.yaml for its keys") from err


def check_refiner_config(refiner: DictConfig) -> None:
    """Fail before the first stage trains when the second cannot: its data must be there, its schedule set."""
    for key in ("data_dir", "val_dir"):
        value = refiner.data.get(key)
        if value and not Path(value).is_dir():
            raise CarsegError(
                f"refiner.data.{key}={value}: no such folder. The edge refiner trains on full-size "
                "Carvana-layout pairs (e.g. ../shared/carvana/train_full_32); point the key at them, or "
                "train without the refiner: refiner=none"
            )
    steps = refiner.get("max_steps")
    if not isinstance(steps, int) or steps <= 0:
        raise CarsegError(f"refiner.max_steps={steps}: give the refiner's training steps (an integer > 0)")
    minutes = refiner.get("minutes")
    if minutes is not None and (not isinstance(minutes, int | float) or minutes <= 0):
        raise CarsegError(f"refiner.minutes={minutes}: give a deadline in minutes (> 0), or null for none")
    if refiner.get("coarse", "model") not in COARSE_SOURCES:
        raise CarsegError(f"refiner.coarse={refiner.get('coarse')}: give one of {', '.join(COARSE_SOURCES)}")
    refiner_module(refiner)  # the module's own checks (a share out of range, a switch given as a word)


def coarse_source(ckpt: str | Path, accelerator: str = "cpu", tta: bool = True) -> CoarseSource:
    """Photo → the probabilities of the checkpoint's model at the photo's full size, as prediction gives
    them (its training size, flip TTA when `tta`, bf16 where the hardware has it), shifted so that 0.5 is
    the model's threshold."""
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu")
    module, size = load_checkpoint(ckpt, map_location=str(device))
    module.eval()
    precision = inference_precision("auto", device)
    logits_of = module_logits(module, device, lambda: autocast(precision, device))
    shift = threshold_logit(float(module.hparams.get("threshold", 0.5)))

    def probabilities(image: np.ndarray) -> np.ndarray:
        full = torch.from_numpy(image).permute(2, 0, 1)[None]
        return torch.sigmoid(full_size_logits(logits_of, full, size, tta)[0, 0] - shift).numpy()

    return probabilities


def train_refiner(
    refiner: DictConfig,
    trainer_args: dict[str, Any],
    output_dir: str | Path,
    checkpoints: list[Path],
    coarse_ckpt: str | Path | None = None,
) -> dict[str, Any]:
    """Train the edge refiner for `refiner.max_steps` on one device of the resolved `trainer_args`'
    accelerator, at their precision, on the probabilities of `coarse_ckpt`'s model (`refiner.coarse=model`)
    or on inputs simulated from the true masks (`simulated`), and embed it into each of `checkpoints`;
    returns its summary (steps, minutes, img/s, validation scores, the checkpoints written)."""
    start = time.time()
    output_dir = Path(output_dir)
    datamodule = build(refiner.data, "refiner.data")
    source = refiner.get("coarse", "model")
    if source == "model":
        if coarse_ckpt is None:
            raise CarsegError("refiner.coarse=model: no checkpoint of the coarse model to take its outputs from")
        datamodule.coarse_source = coarse_source(
            coarse_ckpt, trainer_args.get("accelerator", "cpu"), bool(refiner.get("coarse_tta", True))
        )
    module = refiner_module(refiner)
    timer = EpochTimes()
    callbacks: list[pl.Callback] = [timer]
    if refiner.get("minutes"):
        callbacks.append(TimeBudget(float(refiner.minutes)))
    pl.seed_everything(int(refiner.get("seed", 42)), workers=True)
    trainer = pl.Trainer(
        accelerator=trainer_args.get("accelerator", "auto"),
        devices=1,
        precision=trainer_args.get("precision", "32-true"),
        max_steps=int(refiner.max_steps),
        max_epochs=-1,
        callbacks=callbacks,
        logger=CSVLogger(output_dir, name="refiner", version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=output_dir / "refiner",
        num_sanity_val_steps=0,
    )
    what = f"{source} coarse inputs" + (f" from {Path(coarse_ckpt).name}" if source == "model" else "")
    console.info(f"stage 2: training the edge refiner for {int(refiner.max_steps)} steps on {what}")
    trainer.fit(module, datamodule=datamodule)
    module.net.eval()
    sharpness, alpha_errors = 1.0, {}
    if source == "model":  # the cut-out's alpha sharpness, fitted on training crops with the model's own inputs
        batches = itertools.islice(iter(datamodule.train_dataloader()), ALPHA_FIT_BATCHES)
        sharpness, alpha_errors = fit_alpha_sharpness(module.net, batches)
    band = int(refiner.module.band)
    written = [str(embed_refiner(path, module.net.cpu(), band, sharpness)) for path in checkpoints]
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("refiner/val")}
    train_seconds = sum(e["seconds"] for e in timer.epochs)
    summary = {
        "coarse": source,
        "minutes": round((time.time() - start) / 60, 2),
        "train_minutes": round(train_seconds / 60, 2),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "img/s": round(sum(e["images"] for e in timer.epochs) / max(1e-9, train_seconds), 1),
        **metrics,
        "alpha_sharpness": sharpness,
        "alpha_error_by_sharpness": {str(k): round(v, 5) for k, v in alpha_errors.items()},
        "checkpoints": written,
    }
    console.info(
        f"stage 2: edge refiner {summary['global_step']} steps in {summary['minutes']:.1f} min, band IoU "
        f"{metrics.get('refiner/val_iou', float('nan')):.4f} (coarse input "
        f"{metrics.get('refiner/val_iou_coarse', float('nan')):.4f}), boundary F1 "
        f"{metrics.get('refiner/val_boundary_f1', float('nan')):.4f} (coarse input "
        f"{metrics.get('refiner/val_boundary_f1_coarse', float('nan')):.4f}); written into {len(written)} checkpoint(s)"
    )
    return summary
