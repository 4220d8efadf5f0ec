"""The evaluation task: full-resolution metrics, tables and pictures of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from rich.table import Table

from carseg import console, runs
from carseg.build import build
from carseg.console import print_config_tree
from carseg.data.carvana import Record, scan
from carseg.data.io import read_image, read_mask
from carseg.evaluation.metrics import edge_composite_error, image_metrics
from carseg.evaluation.plots import plot_curves, prediction_panels, review_curve
from carseg.inference.background import composite, load_background
from carseg.inference.predictor import Predictor
from carseg.models.quality import FEATURES, ranking

METRICS = ["iou", "dice", "iou_2class", "pixel_accuracy", "boundary_f1", "edge_error", "edge_error_mask"]


def _records(cfg: DictConfig) -> tuple[list[Record], str]:
    """The images to evaluate: a folder given as `eval_dir`, else the validation split of the data module."""
    if cfg.get("eval_dir"):
        return scan(cfg.eval_dir, cfg.get("mask_source", "auto")), str(cfg.eval_dir)
    datamodule = build(cfg.datamodule, "datamodule", _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule.val_set.records, f"validation split of {cfg.datamodule.data_dir}"


def _quality_report(table: pd.DataFrame, predictor: Predictor) -> dict[str, Any]:
    """How well the label-free quality score ranks the photos by their true error."""
    calibration = predictor.quality_model
    return {
        "calibrated": calibration is not None,
        "target": calibration.target if calibration is not None else "raw",
        # flagging the 10% lowest scores: the share of the 10% worst photos by true IoU it catches
        **ranking(table["quality"], table["iou"], table["boundary_f1"]),
        "mean_abs_error": (
            round(float((table["quality"] - table[calibration.target]).abs().mean()), 4) if calibration else None
        ),
    }


def _panel_rows(predictor: Predictor, records: list[Record], background: str, feather: float) -> list[tuple]:
    rows = []
    for record in records:
        image = read_image(record.image)
        truth = read_mask(record, image.shape[:2])
        ((pred, alpha),) = predictor.mattes([image])
        bg = load_background(background, image.shape[:2])
        rows.append((record.image.stem, image, truth, pred, composite(image, pred, bg, feather, alpha=alpha)))
    return rows


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate at each image's own resolution; write metrics.json, per_image.csv, per_angle.csv,
    worst.csv and plots (curves of the training run, prediction panels) in the output directory."""
    ckpt = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else runs.find_best_checkpoint(cfg.paths.log_dir)
    run_dir = runs.run_dir_of(ckpt)
    if cfg.get("datamodule_from_run", True) and run_dir is not None and not cfg.get("eval_dir"):
        # Same data and split as in training, unless told otherwise.
        cfg = OmegaConf.merge(cfg, {"datamodule": runs.run_config(run_dir).datamodule})
    if cfg.get("print_config", True):
        print_config_tree(cfg, order=("ckpt_path", "eval_dir", "datamodule", "paths"))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    console.info(f"evaluating {ckpt}")
    predictor = Predictor(
        ckpt=ckpt,
        input_size=cfg.get("input_size", "train"),
        tta=cfg.tta,
        precision=cfg.precision,
        refine_radius=int(cfg.get("refine_radius", 0)),
        refine_eps=float(cfg.get("refine_eps", 1e-2)),
        edge_refiner=bool(cfg.get("edge_refiner", True)),
        edge_tta=cfg.get("edge_tta"),
    )
    records, source = _records(cfg)
    rows = []
    images = ((r, read_image(r.image)) for r in track(records, description=f"evaluating {len(records)} images"))
    pairs = (((record, image), image) for record, image in images)
    scored = bool(cfg.get("quality", True))
    batched = predictor.batched_assess if scored else predictor.batched_mattes
    for (record, image), (pred, alpha, *rest) in batched(pairs, int(cfg.get("batch_size", 4))):
        quality = rest[0] if rest else {"score": float("nan")}
        truth = read_mask(record, pred.shape)
        metrics = image_metrics(pred, truth, cfg.boundary_tolerance)
        # the cut-out's edge: through the model's alpha, and through the 0/1 mask (the old cut-out)
        metrics["edge_error"] = edge_composite_error(image, alpha, truth)
        metrics["edge_error_mask"] = edge_composite_error(image, pred, truth)
        signals = {f"q_{k}": v for k, v in quality.items() if k in FEATURES}
        row = {"image": record.image.name, "car_id": record.car_id, "angle": record.angle, **metrics}
        rows.append({**row, "quality": quality["score"], **signals})
    table = pd.DataFrame(rows).sort_values("image")
    table.to_csv(out / "per_image.csv", index=False)
    per_angle = table.groupby("angle")[METRICS].mean().reset_index()
    per_angle.insert(1, "images", table.groupby("angle").size().values)
    per_angle.to_csv(out / "per_angle.csv", index=False)
    worst = table.nsmallest(int(cfg.worst_k), "iou")
    worst.to_csv(out / "worst.csv", index=False)
    summary = {
        "checkpoint": str(ckpt),
        "data": source,
        "images": len(table),
        "tta_flip": bool(cfg.tta),
        "refine_radius": int(cfg.get("refine_radius", 0)),
        "edge_refiner": predictor.refiner is not None,
        "edge_tta": predictor.refiner is not None and predictor.edge_tta,
        # the model's time per photo (resizing, network, TTA, refinement; not decoding or metrics)
        "predict_seconds_per_image": round(predictor.seconds / max(1, predictor.images), 3),
        "threads": torch.get_num_threads(),
        "input_size": predictor.input_size,
        **{f"mean_{m}": float(table[m].mean()) for m in METRICS},
        "kaggle_score_mean_dice": float(table["dice"].mean()),
        "quality": _quality_report(table, predictor) if scored else None,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    pictures = [review_curve(table["quality"], table["iou"], out / "review_curve.png")] if scored else []
    if run_dir is not None and (run_dir / runs.METRICS_CSV).is_file():
        pictures += plot_curves(run_dir / runs.METRICS_CSV, out)
    by_name = {r.image.name: r for r in records}
    step = max(1, len(records) // max(1, int(cfg.panels)))
    # different cars and, for Carvana's 16 angles per car, different angles
    picks = [i * step + (step // 2 + 5 * i) % step for i in range(int(cfg.panels))]
    spread = [records[i] for i in picks if i < len(records)]
    if spread:
        rows_ = _panel_rows(predictor, spread, cfg.background, cfg.feather)
        pictures.append(prediction_panels(rows_, out / "panels.png", "Validation predictions"))
    worst_records = [by_name[n] for n in worst["image"].head(int(cfg.panels))]
    if worst_records:
        rows_ = _panel_rows(predictor, worst_records, cfg.background, cfg.feather)
        pictures.append(prediction_panels(rows_, out / "worst.png", "Lowest IoU"))
    _print(summary, per_angle, worst, out, pictures)
    return summary


def _print(summary: dict[str, Any], per_angle: pd.DataFrame, worst: pd.DataFrame, out: Path, pictures: list) -> None:
    screen = Console()
    table = Table(
        title=f"{summary['images']} images, {summary['data']}" + (" (flip TTA)" if summary["tta_flip"] else "")
    )
    for m in METRICS:
        table.add_column(m, justify="right")
    table.add_row(*(f"{summary[f'mean_{m}']:.5f}" for m in METRICS))
    screen.print(table)
    angles = Table(title="Per angle (mean)")
    for column in ["angle", "images", "iou", "dice", "boundary_f1"]:
        angles.add_column(column, justify="right")
    for _, row in per_angle.iterrows():
        angles.add_row(
            str(int(row.angle)), str(int(row.images)), *(f"{row[c]:.4f}" for c in ("iou", "dice", "boundary_f1"))
        )
    screen.print(angles)
    screen.print("worst: " + ", ".join(f"{r.image} ({r.iou:.4f})" for r in worst.head(5).itertuples()))
    console.info(f"mean IoU {summary['mean_iou']:.4f}, mean Dice {summary['mean_dice']:.4f} → {out / 'metrics.json'}")
    for picture in pictures:
        console.info(f"wrote {picture}")
