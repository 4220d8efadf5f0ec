"""The training task: build everything from the composed config, fit, report `val/iou`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from carseg.build import build
from carseg.console import print_config_tree
from carseg.training.devices import resolve_trainer_args


def _instantiate_group(group: DictConfig | None, name: str) -> list[Any]:
    """Instantiate every `_target_` entry of a dict-of-configs group (callbacks, logger)."""
    return [
        build(conf, f"{name}.{key}")
        for key, conf in (group or {}).items()
        if isinstance(conf, DictConfig) and "_target_" in conf
    ]


def _build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    datamodule = build(cfg.datamodule, "datamodule")
    model = build(cfg.model, "model", _recursive_=False)
    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"), "logger")
    trainer_args = resolve_trainer_args(OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer = build(trainer_args, "trainer", callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, model, trainer


@rank_zero_only
def _report(trainer: pl.Trainer, cfg: DictConfig, seconds: float) -> dict[str, Any]:
    ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    best = ckpt.best_model_score if ckpt is not None else None
    last = trainer.callback_metrics.get("val/iou")
    summary = {
        "monitor": cfg.get("optimized_metric", "val/iou"),
        "best": float(best) if best is not None else None,
        "last_val_iou": float(last) if last is not None else None,
        "best_checkpoint": ckpt.best_model_path if ckpt is not None else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_seconds": round(seconds, 1),
        "output_dir": cfg.paths.output_dir,
    }
    Path(cfg.paths.output_dir, "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"carseg: best {summary['monitor']} = {summary['best']:.4f}, last val/iou = {summary['last_val_iou']:.4f}, "
        f"{summary['epochs']} epochs in {seconds / 60:.1f} min\n"
        f"carseg: best checkpoint {summary['best_checkpoint']}\ncarseg: outputs in {summary['output_dir']}"
        if summary["best"] is not None and summary["last_val_iou"] is not None
        else f"carseg: training ended without a validation score; outputs in {summary['output_dir']}"
    )
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._offline:
            print(f"carseg: W&B run saved offline; upload with `wandb sync {Path(logger.experiment.dir).parent}`")
    return summary


def train(cfg: DictConfig) -> float | None:
    """Train as `cfg` says; return the best value of the monitored metric (for sweepers)."""
    if rank_zero_only.rank == 0 and cfg.get("print_config", True):
        print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.log")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    start = time.time()
    datamodule, model, trainer = _build(cfg)
    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        summary = _report(trainer, cfg, time.time() - start) or {}
    finally:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
    return summary.get("best")
