"""`carseg calibrate`: fit the quality score's calibration on photos of cars the model did not train on, and
store it in the checkpoint, so that every cut-out's score reads as its predicted boundary F1 (or IoU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from carseg import console
from carseg.data.carvana import scan
from carseg.data.io import read_image, read_mask
from carseg.errors import CarsegError
from carseg.evaluation.metrics import image_metrics
from carseg.inference.predictor import Predictor
from carseg.models.checkpoint import embed_quality
from carseg.models.quality import FEATURES, caught, fit_quality, spearman

TARGETS = ("boundary_f1", "iou")


def calibrate(
    ckpt: str | Path,
    data_dir: str | Path,
    target: str = "boundary_f1",
    tta: bool = True,
    images: int | None = None,
    boundary_tolerance: int = 2,
    write: bool = True,
) -> dict[str, Any]:
    """Predict the photos of `data_dir` (a Carvana-layout folder with masks), fit the calibration of the
    quality signals to their true `target`, judge it car by car (each car's photos scored by a fit on the
    other cars), and store it in `ckpt` (unless `write` is false). The report."""
    if target not in TARGETS:
        raise CarsegError(f"--target {target}: choose {' or '.join(TARGETS)}")
    records = scan(data_dir, "auto")[:images] if images else scan(data_dir, "auto")
    if len({r.car_id for r in records}) < 3:
        raise CarsegError(f"{data_dir}: photos of at least 3 cars are needed to fit and judge the calibration")
    predictor = Predictor(ckpt=ckpt, tta=tta)
    rows, truth, cars = [], [], []
    for record in track(records, description=f"calibrating on {len(records)} photos"):
        image = read_image(record.image)
        ((mask, _, quality),) = predictor.assess([image])
        metrics = image_metrics(mask, read_mask(record, mask.shape), boundary_tolerance)
        rows.append({k: quality[k] for k in FEATURES})
        truth.append(metrics[target])
        cars.append(record.car_id)
    held_out = np.zeros(len(rows))
    for car in sorted(set(cars)):  # each car judged by a calibration that never saw it
        inside = [i for i, c in enumerate(cars) if c != car]
        model = fit_quality([rows[i] for i in inside], [truth[i] for i in inside], target)
        for i, c in enumerate(cars):
            if c == car:
                held_out[i] = model.predict(rows[i])
    model = fit_quality(rows, truth, target)
    model.notes.update(
        spearman_held_out_cars=spearman(held_out, truth),
        mean_abs_error_held_out_cars=float(np.mean(np.abs(held_out - np.asarray(truth)))),
        worst_10pct_caught_held_out_cars=caught(held_out, truth, 0.1),
    )
    report = {
        "checkpoint": str(ckpt),
        "data": str(data_dir),
        "photos": len(rows),
        "cars": len(set(cars)),
        "target": target,
        "tta": tta,
        "features": list(model.names),
        "weights": [round(w, 5) for w in model.weights],
        **{k: round(v, 4) for k, v in model.notes.items()},
    }
    if write:
        embed_quality(ckpt, model)
    console.info(
        f"quality calibration on {len(rows)} photos of {report['cars']} cars: Spearman "
        f"{report['spearman_held_out_cars']} with the true {target} (each car scored by a fit without it), mean error "
        f"{report['mean_abs_error_held_out_cars']}; " + (f"stored in {ckpt}" if write else "not stored")
    )
    return report
