"""`carseg data audit`: rank a data set's training pairs by how much the model's prediction disagrees with the
given mask, where the model is sure of itself, to find hand-made masks with mistakes.

Best with the folds of a cross-validation sweep (`cv=kfold`): each pair is judged by the fold that held its
car out, so no model judges a mask it trained on. A single checkpoint judges every pair (in-sample for the
cars it trained on, which hides mistakes it learned)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from carseg import console, runs
from carseg.data.carvana import Record, read_car_list, scan, split_by_car
from carseg.data.io import read_image, read_mask
from carseg.drawing import PREDICTION_COLOUR, TRUTH_COLOUR, overlay
from carseg.errors import CarsegError
from carseg.evaluation.plots import picture_grid
from carseg.inference.predictor import Predictor

SURE = 0.9  # a pixel where the model's probability is beyond this (or under 1 - this) counts as sure
MASK_ONLY_COLOUR, MODEL_ONLY_COLOUR = (230, 40, 40), (40, 90, 230)  # red, blue
ZOOM = 0.2  # the panel's close-up: a square window of this share of the photo's shorter side
WINDOW_COLOUR = (255, 200, 0)


def held_out_cars(ckpt: Path, records: list[Record]) -> set[str] | None:
    """The cars of `records` that the run of `ckpt` validated on (did not train on), from its config; None
    when the run's split cannot be read."""
    run_dir = runs.run_dir_of(ckpt)
    if run_dir is None:
        return None
    try:
        dm = runs.run_config(run_dir).datamodule
    except (OSError, ValueError, KeyError):
        return None
    val_cars = list(dm.get("val_cars") or []) or (read_car_list(dm.val_cars_file) if dm.get("val_cars_file") else None)
    fold = dm.get("fold")
    _, val = split_by_car(
        records, float(dm.get("val_fraction", 0.15)), int(dm.get("seed", 42)), val_cars, fold, dm.get("num_folds", 5)
    )
    return {r.car_id for r in val}


def disagreement(prob: np.ndarray, given: np.ndarray) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """How a prediction (probabilities) and a given 0/1 mask disagree where the model is sure: the counts,
    and the maps (mask only: the mask says car, the model is sure it is not; model only: the other way)."""
    given = given.astype(bool)
    sure_car, sure_ground = prob > SURE, prob < 1 - SURE
    mask_only = given & sure_ground  # the mask says car, the model is sure it is not
    model_only = ~given & sure_car  # the mask says background, the model is sure it is car
    pred = prob > 0.5
    union = (pred | given).sum()
    return {
        "suspect_pixels": int(mask_only.sum() + model_only.sum()),
        "missing_in_mask": int(model_only.sum()),
        "extra_in_mask": int(mask_only.sum()),
        "iou_with_prediction": float((pred & given).sum() / union) if union else 1.0,
    }, (mask_only, model_only)


def densest_window(suspect: np.ndarray, share: float = ZOOM) -> tuple[int, int, int]:
    """(top, left, side) of the square window, `share` of the shorter side, that holds the most `suspect`
    pixels: where a close-up shows a disagreement that is a fraction of a percent of the photo."""
    h, w = suspect.shape
    side = max(8, min(h, w, round(share * min(h, w))))
    counts = cv2.boxFilter(suspect.astype(np.float32), -1, (side, side), normalize=False, anchor=(0, 0))
    counts = counts[: h - side + 1, : w - side + 1]  # windows that lie inside the photo
    top, left = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(top), int(left), side


def _panel_row(image: np.ndarray, given: np.ndarray, prob: np.ndarray) -> list[np.ndarray]:
    """The photo with its close-up window marked, then the given mask, the prediction and where they
    disagree, in that window."""
    _, (mask_only, model_only) = disagreement(prob, given)
    top, left, side = densest_window(mask_only | model_only)
    window = (slice(top, top + side), slice(left, left + side))
    crop = image[window]  # the tints are per pixel: tint the close-up only
    marked = overlay(overlay(crop, model_only[window], MODEL_ONLY_COLOUR), mask_only[window], MASK_ONLY_COLOUR)
    photo = image.copy()
    thick = max(2, min(image.shape[:2]) // 200)
    cv2.rectangle(photo, (left, top), (left + side - 1, top + side - 1), WINDOW_COLOUR, thick)
    return [
        photo,
        overlay(crop, given[window], TRUTH_COLOUR),
        overlay(crop, prob[window] > 0.5, PREDICTION_COLOUR),
        marked,
    ]


def audit(
    data_dir: str | Path,
    ckpts: list[Path],
    out: str | Path,
    top: int = 12,
    tta: bool = True,
    images: int | None = None,
) -> pd.DataFrame:
    """Write `audit.csv` (every pair, the most suspect first) and `audit_suspects.png` (the `top` suspects:
    photo, given mask, prediction, where they disagree) into `out`; the table."""
    records = scan(data_dir, "auto")
    records = records[:images] if images else records
    if not records:
        raise CarsegError(f"{data_dir}: no photo-mask pairs to audit")
    judges: list[tuple[Path, set[str] | None]] = [(c, held_out_cars(c, records)) for c in ckpts]
    if len(judges) > 1 and any(cars is None for _, cars in judges):
        raise CarsegError("carseg data audit: a fold's split cannot be read from its run folder; give its run")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictors = {c: Predictor(ckpt=c, tta=tta) for c, _ in judges}
    rows = []
    for record in track(records, description=f"auditing {len(records)} pairs"):
        judge = next((c for c, cars in judges if cars is not None and record.car_id in cars), None)
        out_of_fold = judge is not None
        judge = judge or judges[0][0]
        image = read_image(record.image)
        prob = predictors[judge].probabilities([image])[0]
        found, _ = disagreement(prob, read_mask(record, prob.shape))
        rows.append(
            {
                "image": record.image.name,
                "car_id": record.car_id,
                "angle": record.angle,
                **found,
                "judged_by": str(judge),
                "out_of_fold": out_of_fold,
            }
        )
    table = pd.DataFrame(rows).sort_values(["suspect_pixels", "image"], ascending=[False, True])
    table.to_csv(out / "audit.csv", index=False)
    by_name = {r.image.name: r for r in records}
    panel_rows = []
    for name in table["image"].head(top):
        record = by_name[name]
        image = read_image(record.image)
        given = read_mask(record, image.shape[:2])
        prob = predictors[Path(table.set_index("image").loc[name, "judged_by"])].probabilities([image])[0]
        panel_rows.append((name, _panel_row(image, given, prob)))
    columns = ["photo (close-up in yellow)", "given mask", "prediction", "red: mask says car, blue: mask misses car"]
    if panel_rows:
        picture_grid(panel_rows, columns, out / "audit_suspects.png", "Most suspect masks", cell=(11, 2.6), dpi=110)
    share = float(table["out_of_fold"].mean())
    console.info(
        f"audited {len(table)} pairs ({share:.0%} judged out of fold); the most suspect: "
        + ", ".join(f"{r.image} ({r.suspect_pixels} px)" for r in table.head(3).itertuples())
        + f"; {out / 'audit.csv'}, {out / 'audit_suspects.png'}"
    )
    return table
