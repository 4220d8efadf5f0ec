"""The evaluation task: validation metrics of a checkpoint (the newest run's best by default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from carseg.build import build
from carseg.console import print_config_tree
from carseg.evaluation.checkpoints import find_best_checkpoint, load_module, run_dir_of
from carseg.training.devices import resolve_trainer_args


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Validate the checkpoint on its run's validation split; write `metrics.json` in the output dir."""
    ckpt = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else find_best_checkpoint(cfg.paths.log_dir)
    datamodule_cfg = cfg.datamodule
    run_dir = run_dir_of(ckpt)
    if cfg.get("datamodule_from_run", True) and run_dir is not None:
        # Same data and split as in training, unless told otherwise.
        datamodule_cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml").datamodule
    cfg = OmegaConf.merge(cfg, {"datamodule": datamodule_cfg})
    if rank_zero_only.rank == 0 and cfg.get("print_config", True):
        print_config_tree(cfg, order=("ckpt_path", "datamodule", "trainer", "paths"))
    print(f"carseg: evaluating {ckpt}")
    model = load_module(ckpt)
    datamodule = build(cfg.datamodule, "datamodule")
    trainer_args = resolve_trainer_args(OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer_args.update(logger=False, devices=1, strategy="auto", num_nodes=1)
    trainer = build(trainer_args, "trainer")
    results = trainer.validate(model, datamodule=datamodule, verbose=True)[0]
    metrics = {"checkpoint": str(ckpt), **{k: float(v) for k, v in results.items()}}
    out = Path(cfg.paths.output_dir) / "metrics.json"
    out.write_text(json.dumps(metrics, indent=2))
    iou, dice = metrics.get("val/iou", float("nan")), metrics.get("val/dice", float("nan"))
    print(f"carseg: val/iou = {iou:.4f}, val/dice = {dice:.4f}; written to {out}")
    return metrics
