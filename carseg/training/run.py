"""The training task: build everything from the composed config, fit, report the monitored metric."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from carseg import console, runs
from carseg.build import build
from carseg.config import compose_config
from carseg.console import print_config_tree
from carseg.errors import CarsegError
from carseg.models.module import SegmentationModule
from carseg.processes import end_with_launcher
from carseg.training import ddp
from carseg.training.callbacks import EpochTimes
from carseg.training.devices import resolve_trainer_args
from carseg.training.loggers import carry_history
from carseg.training.refinement import check_refiner_config, train_refiner

MODES = ("max", "min")


def _instantiate_group(group: DictConfig | None, name: str) -> list[Any]:
    """Instantiate every `_target_` entry of a dict-of-configs group (callbacks, logger)."""
    return [
        build(conf, f"{name}.{key}")
        for key, conf in (group or {}).items()
        if isinstance(conf, DictConfig) and "_target_" in conf
    ]


def resolve_ckpt_path(ckpt_path: str | None, log_dir: str | Path) -> Path | None:
    """`last`: the newest `last.ckpt` of any training run under `log_dir`; a path: that file."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        return runs.find_last_checkpoint(log_dir)
    path = Path(ckpt_path)
    if not path.is_file():
        raise CarsegError(f"ckpt_path={ckpt_path}: no such file (use ckpt_path=last for the newest run)")
    return path


def _sweep_context() -> tuple[str, int] | None:
    """(sweep directory name, job number) inside a Hydra multirun, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name, int(hydra_cfg.job.num)


def _configure_wandb(cfg: DictConfig, resume_from: Path | None) -> None:
    """Group sweep jobs by sweep; resume the W&B run of the run being resumed."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is None:
        return
    with open_dict(cfg):
        sweep = _sweep_context()
        if sweep is not None:  # a sweep's jobs (a cross-validation's folds) are one W&B group
            fold = cfg.datamodule.get("fold")
            wandb_cfg.group = wandb_cfg.get("group") or sweep[0]
            job = f"fold{fold}" if fold is not None else f"job{sweep[1]}"
            wandb_cfg.name = wandb_cfg.get("name") or f"{sweep[0]}-{job}"
            wandb_cfg.tags = [*(wandb_cfg.get("tags") or []), "sweep", *(["cv"] if fold is not None else [])]
        old_run = runs.run_dir_of(resume_from) if resume_from is not None else None
        if old_run is not None and (old_run / runs.WANDB_ID).is_file():
            wandb_cfg.id = (old_run / runs.WANDB_ID).read_text().strip()
            wandb_cfg.resume = "allow"


def monitored(cfg: DictConfig) -> tuple[str, str]:
    """(`optimized_metric`, `optimized_mode`): the one metric that checkpoints, early stopping, sweepers
    and the sweep summary follow; checked against what the module logs."""
    metric, mode = str(cfg.get("optimized_metric", "val/iou")), str(cfg.get("optimized_mode", "max"))
    if mode not in MODES:
        raise CarsegError(f"optimized_mode={mode!r}: use max (val/iou, val/dice) or min (val/loss)")
    if metric not in SegmentationModule.LOGGED_METRICS:
        raise CarsegError(
            f"optimized_metric={metric!r} is not logged; choose one of {', '.join(SegmentationModule.LOGGED_METRICS)}"
        )
    return metric, mode


def _check_callbacks(callbacks: list[Any], metric: str, mode: str) -> None:
    """Checkpoints and early stopping follow the monitored metric: a config that says otherwise is an error."""
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint | EarlyStopping) and callback.monitor is not None:
            key = "model_checkpoint" if isinstance(callback, ModelCheckpoint) else "early_stopping"
            if callback.monitor != metric or callback.mode != mode:
                raise CarsegError(
                    f"callbacks.{key} monitors {callback.monitor} ({callback.mode}) but optimized_metric={metric} "
                    f"(optimized_mode={mode}); leave callbacks.{key}.monitor and .mode at their defaults "
                    "(${optimized_metric}, ${optimized_mode})"
                )


def _build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    metric, mode = monitored(cfg)
    trainer_args = resolve_trainer_args(OmegaConf.to_container(cfg.trainer, resolve=True))
    datamodule = build(cfg.datamodule, "datamodule", _convert_="all")
    model = build(cfg.model, "model", _recursive_=False)
    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    _check_callbacks(callbacks, metric, mode)
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"), "logger")
    trainer = build(trainer_args, "trainer", callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    _record_wandb_id(loggers, Path(cfg.paths.output_dir))
    return datamodule, model, trainer


@rank_zero_only
def _record_wandb_id(loggers: list[Logger], output_dir: Path) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            (output_dir / runs.WANDB_ID).write_text(logger.experiment.id)


def best_value(trainer: pl.Trainer, metric: str) -> float | None:
    """The best value of `metric`: the checkpoint callback's score (it monitors `metric`), else the last
    logged value when the run keeps no checkpoints; None when it was never logged."""
    ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if ckpt is not None and ckpt.monitor == metric and ckpt.best_model_score is not None:
        return float(ckpt.best_model_score)
    last = trainer.callback_metrics.get(metric)
    return float(last) if last is not None else None


@rank_zero_only
def _report(trainer: pl.Trainer, cfg: DictConfig, seconds: float) -> dict[str, Any]:
    metric, mode = monitored(cfg)
    ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    last = trainer.callback_metrics.get(metric)
    last_iou = trainer.callback_metrics.get("val/iou")
    summary = {
        "monitor": metric,
        "mode": mode,
        "best": best_value(trainer, metric),
        "last": float(last) if last is not None else None,
        "last_val_iou": float(last_iou) if last_iou is not None else None,
        "best_checkpoint": (ckpt.best_model_path or None) if ckpt is not None else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_seconds": round(seconds, 1),
        "output_dir": cfg.paths.output_dir,
    }
    timer = next((c for c in trainer.callbacks if isinstance(c, EpochTimes)), None)
    if timer is not None and timer.epochs:
        summary["stages"], summary["epoch_times"] = timer.stages(), timer.epochs
    runs.write_summary(cfg.paths.output_dir, summary)
    for stage in summary.get("stages", []):
        console.info(
            f"stage {stage['size']}: {stage['epochs']} epoch(s), {stage['minutes']:.1f} min, "
            f"{stage['images'] / max(stage['seconds'], 1e-9):.1f} training img/s with validation and checkpoints"
        )
    if summary["best"] is not None and summary["last_val_iou"] is not None:
        console.info(
            f"best {metric} = {summary['best']:.4f} ({mode}), last val/iou = {summary['last_val_iou']:.4f}, "
            f"{summary['epochs']} epochs in {seconds / 60:.1f} min"
        )
        console.info(f"best checkpoint {summary['best_checkpoint']}")
        console.info(f"outputs in {summary['output_dir']}")
    else:
        console.info(f"training ended without a validation score; outputs in {summary['output_dir']}")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._offline:
            console.info(f"W&B run saved offline; upload with `wandb sync {Path(logger.experiment.dir).parent}`")
    return summary


def _second_stage(cfg: DictConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Train the edge refiner on the best checkpoint's own outputs, into the best and last checkpoints; add
    its figures to summary.json."""
    last = runs.last_checkpoint(cfg.paths.output_dir)
    best = summary.get("best_checkpoint")
    targets = {Path(p) for p in (best, last) if p and Path(p).is_file()}
    if not targets:
        console.warning("no checkpoint to add the edge refiner to; stage 2 skipped")
        return summary
    coarse = best if best and Path(best).is_file() else last
    trainer_args = resolve_trainer_args(OmegaConf.to_container(cfg.trainer, resolve=True))
    summary["refiner"] = train_refiner(cfg.refiner, trainer_args, cfg.paths.output_dir, sorted(targets), coarse)
    summary["wall_seconds_with_refiner"] = round(summary.get("wall_seconds", 0) + summary["refiner"]["minutes"] * 60, 1)
    runs.write_summary(cfg.paths.output_dir, summary)
    return summary


def refine_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or train again) the edge refiner of a finished run: its config composed from the overrides it
    was started with plus `overrides` (e.g. `refiner=edge refiner.max_steps=2000`), on its best checkpoint's
    outputs, into its best and last checkpoints; returns the updated summary."""
    run_dir = Path(run_dir).resolve()
    summary = runs.read_summary(run_dir)
    if summary is None:
        raise CarsegError(f"{run_dir / runs.SUMMARY}: missing; give the folder of a finished training run")
    recorded = [o for o in runs.run_overrides(run_dir) or [] if not o.startswith("hydra.")]
    try:
        cfg = compose_config("train", [*recorded, *(overrides or []), f"paths.output_dir={run_dir}"])
    except HydraException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CarsegError(
            f"carseg refine {run_dir}: the overrides do not fit the config ({first}); give key=value pairs of "
            "the training config, e.g. refiner.max_steps=2000"
        ) from err
    if not cfg.get("refiner"):
        raise CarsegError(f"{run_dir}: its config has no edge refiner (refiner=none); add refiner=edge")
    check_refiner_config(cfg.refiner)
    best = runs.best_checkpoint(run_dir)  # in this folder, also when the run was moved or copied
    return _second_stage(cfg, {**summary, "best_checkpoint": str(best) if best else None})


def train(cfg: DictConfig) -> float | None:
    """Train as `cfg` says; return the best value of `optimized_metric` (what sweepers optimise)."""
    end_with_launcher()  # a rank started by Lightning's launcher ends with it
    ddp.install()
    with ddp.isolated_job():
        return _train(cfg)


def _train(cfg: DictConfig) -> float | None:
    console.lightning_into_run_log()
    if rank_zero_only.rank == 0 and cfg.get("print_config", True):
        print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.log")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    resume_from = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir)
    if resume_from is not None:
        console.info(f"resuming from {resume_from}")
        if rank_zero_only.rank == 0:
            carry_history(cfg.get("logger"), resume_from)  # the new run's curves start at step 0
    _configure_wandb(cfg, resume_from)
    if cfg.get("refiner"):
        check_refiner_config(cfg.refiner)
    start = time.time()
    datamodule, model, trainer = _build(cfg)
    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
        summary = _report(trainer, cfg, time.time() - start) or {}
        if cfg.get("refiner") and cfg.get("train", True) and rank_zero_only.rank == 0:
            summary = _second_stage(cfg, summary)
    except SystemExit as stop:  # SIGTERM (Lightning raises SIGTERMException) or Ctrl-C
        last = runs.last_checkpoint(cfg.paths.output_dir)
        hint = f"the same command with ckpt_path={last}" if last.is_file() else "no epoch had finished; start again"
        console.warning(f"training interrupted at step {trainer.global_step}; checkpoints kept. Resume: {hint}")
        code = stop.code if isinstance(stop.code, int) and stop.code else 143
        raise SystemExit(code) from None
    finally:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
                logger.experiment.finish()
    return summary.get("best")
