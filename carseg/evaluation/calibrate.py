"""`carseg calibrate`: fit the quality score's calibration on photos of cars the model did not train on, and
store it in the checkpoint, so that every cut-out's score reads as its predicted boundary F1 (or IoU).

The report judges the score car by car (each car's photos scored by a fit on the other cars): its Spearman
correlation with the true boundary F1 and IoU, the share of the 10% worst photos by IoU caught by flagging the
10% lowest scores, what each signal contributes (alone, and what the score loses without it), and what the
score costs: the prediction time it adds, measured on the same photos."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import track

from carseg import console
from carseg.data.carvana import scan
from carseg.data.io import read_image, read_mask
from carseg.errors import CarsegError
from carseg.evaluation.metrics import image_metrics
from carseg.inference.predictor import Predictor
from carseg.models.checkpoint import embed_quality
from carseg.models.quality import (
    FEATURES,
    REVIEW_SHARE,
    WORSE_WHEN_HIGH,
    fit_quality,
    held_out_scores,
    ranking,
    spearman,
)

TARGETS = ("boundary_f1", "iou")


def _ranking(score: np.ndarray, table: pd.DataFrame, target: str) -> dict[str, float]:
    """How well `score` (higher: better) ranks the photos of `table` by their true quality, and its mean
    error as a prediction of `target`."""
    judged = ranking(score, table["iou"], table["boundary_f1"])
    return {**judged, "mean_abs_error": round(float(np.mean(np.abs(score - table[target]))), 4)}


def judge(table: pd.DataFrame, target: str = "boundary_f1") -> dict[str, Any]:
    """The score's ranking on the photos of `table` (one row per photo: car_id, iou, boundary_f1 and the
    signals), each car scored by a calibration fitted without it; then each signal alone (its sign fixed in
    advance where a higher value means worse, from the data for the area and the frame) and the calibrated
    score without it."""
    rows = table[list(FEATURES)].to_dict("records")
    truth, cars = table[target].tolist(), table["car_id"].astype(str).tolist()
    names = tuple(n for n in FEATURES if table[n].notna().all())
    report: dict[str, Any] = {
        "held_out_cars": _ranking(held_out_scores(rows, truth, cars, target, names), table, target)
    }
    signals = {}
    for name in names:
        values = table[name].to_numpy(float)
        if name in WORSE_WHEN_HIGH:
            sign, direction = -1.0, "higher is worse"
        else:
            sign = 1.0 if spearman(values, truth) >= 0 else -1.0
            direction = f"{'higher' if sign > 0 else 'lower'} is better (from the data)"
        alone = ranking(sign * values, table["iou"], table["boundary_f1"])  # not on the target's scale: no error
        others = tuple(n for n in names if n != name)
        without = _ranking(held_out_scores(rows, truth, cars, target, others), table, target) if others else None
        signals[name] = {"direction": direction, "alone": alone, "score_without_it": without}
    report["signals"] = signals
    return report


def score_cost(predictor: Predictor, images: list[np.ndarray]) -> dict[str, float]:
    """The prediction time the score adds: the same photos cut out without (`mattes`) and with (`assess`)
    it, taken in turn photo by photo, after one photo of warm-up."""
    predictor.mattes(images[:1]), predictor.assess(images[:1])
    plain = scored = 0.0
    for image in images:
        start = time.perf_counter()
        predictor.mattes([image])
        middle = time.perf_counter()
        predictor.assess([image])
        plain, scored = plain + middle - start, scored + time.perf_counter() - middle
    return {
        "photos": len(images),
        "seconds_per_photo_without_score": round(plain / len(images), 4),
        "seconds_per_photo_with_score": round(scored / len(images), 4),
        "added_share": round((scored - plain) / plain, 4),
    }


def calibrate(
    ckpt: str | Path,
    data_dir: str | Path,
    target: str = "boundary_f1",
    tta: bool = True,
    images: int | None = None,
    boundary_tolerance: int = 2,
    write: bool = True,
    photos_csv: str | Path | None = None,
    timed: int = 8,
) -> dict[str, Any]:
    """Predict the photos of `data_dir` (a Carvana-layout folder with masks), fit the calibration of the
    quality signals to their true `target`, judge it car by car (`judge`), time it on `timed` photos
    (`score_cost`; 0: not), and store it in `ckpt` (unless `write` is false); `photos_csv` also keeps every
    photo's signals and true scores. The report."""
    if target not in TARGETS:
        raise CarsegError(f"--target {target}: choose {' or '.join(TARGETS)}")
    records = scan(data_dir, "auto")[:images] if images else scan(data_dir, "auto")
    if len({r.car_id for r in records}) < 3:
        raise CarsegError(f"{data_dir}: photos of at least 3 cars are needed to fit and judge the calibration")
    predictor = Predictor(ckpt=ckpt, tta=tta)
    photos, timing = [], []  # timing: the first `timed` photos, kept for `score_cost` (not read twice)
    for record in track(records, description=f"calibrating on {len(records)} photos"):
        image = read_image(record.image)
        if len(timing) < timed:
            timing.append(image)
        ((mask, _, quality),) = predictor.assess([image])
        metrics = image_metrics(mask, read_mask(record, mask.shape), boundary_tolerance)
        photos.append(
            {
                "image": record.image.name,
                "car_id": record.car_id,
                "iou": metrics["iou"],
                "boundary_f1": metrics["boundary_f1"],
                **{k: quality[k] for k in FEATURES},
            }
        )
    table = pd.DataFrame(photos)
    if photos_csv:
        Path(photos_csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(photos_csv, index=False)
    judged = judge(table, target)
    held_out = judged["held_out_cars"]
    model = fit_quality(
        table[list(FEATURES)].to_dict("records"),
        table[target].tolist(),
        target,
        groups=table["car_id"].astype(str).tolist(),
    )
    model.notes.update(
        spearman_held_out_cars=held_out[f"spearman_{target}"],
        mean_abs_error_held_out_cars=held_out["mean_abs_error"],
        worst_10pct_iou_caught_held_out_cars=held_out["worst_10pct_caught"],
    )
    report = {
        "checkpoint": str(ckpt),
        "data": str(data_dir),
        "photos": len(table),
        "cars": int(table["car_id"].nunique()),
        "target": target,
        "tta": tta,
        "features": list(model.names),
        "weights": [round(w, 5) for w in model.weights],
        **{k: round(v, 4) for k, v in model.notes.items()},
        **judged,
    }
    if timed:
        report["cost"] = score_cost(predictor, timing)
    if write:
        embed_quality(ckpt, model)
    console.info(
        f"quality calibration on {len(table)} photos of {report['cars']} cars, each car scored by a fit without it: "
        f"Spearman {held_out['spearman_boundary_f1']} with the true boundary F1, {held_out['spearman_iou']} with "
        f"the IoU; flagging the {REVIEW_SHARE:.0%} lowest catches {held_out['worst_10pct_caught']:.0%} of the "
        f"{REVIEW_SHARE:.0%} worst by IoU; "
        + (f"the score adds {report['cost']['added_share']:.1%} to the prediction time; " if timed else "")
        + (f"stored in {ckpt}" if write else "not stored")
    )
    return report
