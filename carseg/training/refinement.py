"""The second training stage: the edge refiner, trained on full-size crops and written into the run's
checkpoints, so that every tool that reads the checkpoint (evaluate, predict, serve) refines its edges."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger

from carseg.build import build
from carseg.errors import CarsegError
from carseg.models.checkpoint import embed_refiner
from carseg.models.refiner import RefinerModule
from carseg.training.callbacks import EpochTimes, TimeBudget


def check_refiner_config(refiner: DictConfig) -> None:
    """Fail before the first stage trains when the second cannot: its data must be there."""
    for key in ("data_dir", "val_dir"):
        value = refiner.data.get(key)
        if value and not Path(value).is_dir():
            raise CarsegError(
                f"refiner.data.{key}={value}: no such folder. The edge refiner trains on full-size "
                "Carvana-layout pairs (e.g. ../shared/carvana/train_full_32); point the key at them, or "
                "train without the refiner: refiner=none"
            )
    if not refiner.get("minutes") or float(refiner.minutes) <= 0:
        raise CarsegError(f"refiner.minutes={refiner.get('minutes')}: give the refiner's training minutes (> 0)")


def train_refiner(
    refiner: DictConfig, trainer_args: dict[str, Any], output_dir: str | Path, checkpoints: list[Path]
) -> dict[str, Any]:
    """Train the edge refiner for `refiner.minutes` on one device of the resolved `trainer_args`' accelerator,
    at their precision, and embed it into each of `checkpoints`; returns its summary (minutes, epochs,
    validation scores, the checkpoints written)."""
    start = time.time()
    output_dir = Path(output_dir)
    datamodule = build(refiner.data, "refiner.data")
    module = RefinerModule(**OmegaConf.to_container(refiner.module, resolve=True))
    timer = EpochTimes()
    trainer = pl.Trainer(
        accelerator=trainer_args.get("accelerator", "auto"),
        devices=1,
        precision=trainer_args.get("precision", "32-true"),
        max_epochs=int(refiner.max_epochs),
        callbacks=[TimeBudget(float(refiner.minutes)), timer],
        logger=CSVLogger(output_dir, name="refiner", version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=output_dir / "refiner",
        num_sanity_val_steps=0,
    )
    print(f"carseg: stage 2: training the edge refiner for up to {float(refiner.minutes):.1f} min")
    trainer.fit(module, datamodule=datamodule)
    module.net.eval()
    written = [str(embed_refiner(path, module.net.cpu(), int(refiner.module.band))) for path in checkpoints]
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("refiner/val")}
    summary = {
        "minutes": round((time.time() - start) / 60, 2),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "img/s": round(sum(e["images"] for e in timer.epochs) / max(1e-9, sum(e["seconds"] for e in timer.epochs)), 1),
        **metrics,
        "checkpoints": written,
    }
    print(
        f"carseg: stage 2: edge refiner {summary['minutes']:.1f} min, band IoU "
        f"{metrics.get('refiner/val_iou', float('nan')):.4f} (coarse input "
        f"{metrics.get('refiner/val_iou_coarse', float('nan')):.4f}); written into {len(written)} checkpoint(s)"
    )
    return summary
