"""The resolution ceiling: the best full-size IoU a model working at a smaller size can reach.

A perfect model at size (h, w) returns the true mask shrunk to (h, w): as 0/1 pixels when it was trained
on 0/1 masks, or as each pixel's car share when trained on soft masks. Upsampled back (bilinear, as
`Predictor` does) and thresholded, optionally refined along the photo's edges, it is scored against the
full-size truth. What is left below 1.0 is lost to the size alone, before any model error.

The edge refiner's ceiling (`refiner_ceiling`): a trained model's own full-size masks with the true mask
pasted into exactly the region the edge refiner may change (the band around the model's predicted edge),
scored as the evaluation scores: what a perfect refiner would reach on that model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from carseg.bench.report import show, write
from carseg.data.carvana import scan
from carseg.data.io import read_image, read_mask
from carseg.evaluation.metrics import image_metrics, iou
from carseg.inference.predictor import Predictor
from carseg.inference.refine import refine_probabilities
from carseg.masks import edge_band
from carseg.models.checkpoint import load_refiner


def run(
    data_dir: str | Path,
    sizes: Sequence[Sequence[int]] = ((160, 240), (320, 480)),
    images: int | None = None,
    refine_radius: int = 8,
    out: str | Path = "bench/ceiling.json",
    ckpt: str | Path | None = None,
) -> dict[str, Any]:
    """The resolution ceiling at each of `sizes` and, with `ckpt`, that model's edge refiner's ceiling."""
    records = scan(data_dir)[:images] if images else scan(data_dir)
    scores: dict[tuple[int, int, str], list[float]] = {}
    for record in records:
        image = read_image(record.image)
        truth = read_mask(record, image.shape[:2]).astype(bool)
        full_h, full_w = truth.shape
        for h, w in sizes:
            share = cv2.resize(truth.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
            for kind, small in (("0/1 mask", (share >= 0.5).astype(np.float32)), ("soft mask", share)):
                up = np.clip(cv2.resize(small, (full_w, full_h), interpolation=cv2.INTER_LINEAR), 0, 1)
                scores.setdefault((h, w, kind), []).append(iou(up > 0.5, truth))
                if refine_radius:
                    refined = refine_probabilities(image, up, refine_radius)
                    scores.setdefault((h, w, f"{kind} + refine r{refine_radius}"), []).append(iou(refined > 0.5, truth))
    rows = [
        {"size": f"{h}x{w}", "model output": kind, "ceiling IoU": float(np.mean(v))}
        for (h, w, kind), v in scores.items()
    ]
    show(f"resolution ceiling on {len(records)} images of {data_dir}", rows)
    payload: dict[str, Any] = {"data": str(data_dir), "images": len(records), "ceiling": rows}
    if ckpt is not None:
        payload["refiner_ceiling"] = refiner_ceiling(ckpt, data_dir, images=images)
    write(out, payload)
    return payload


def refiner_ceiling(
    ckpt: str | Path,
    data_dir: str | Path,
    bands: Sequence[int] = (4, 16),
    tta: bool = True,
    images: int | None = None,
) -> list[dict[str, Any]]:
    """Mean IoU, Dice and boundary F1 over the pairs of `data_dir` of the checkpoint's masks without its edge
    refiner, and with the truth pasted into the band of each width in `bands` around its predicted edge
    (the checkpoint's own band among them when it has a refiner)."""
    predictor = Predictor(ckpt=ckpt, tta=tta, edge_refiner=False)
    own = load_refiner(ckpt)
    bands = sorted({*bands, *([own[1]] if own else [])})
    records = scan(data_dir)[:images] if images else scan(data_dir)
    scores: dict[str, list[dict[str, float]]] = {}
    for record in records:
        image = read_image(record.image)
        truth = read_mask(record, image.shape[:2]).astype(bool)
        pred = predictor.masks([image])[0].astype(bool)
        scores.setdefault("model, no refiner", []).append(image_metrics(pred, truth))
        for band in bands:
            pasted = np.where(edge_band(pred, band), truth, pred)
            scores.setdefault(f"truth pasted within {band} px", []).append(image_metrics(pasted, truth))
    rows = []
    for what, values in scores.items():
        mean = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        rows.append(
            {
                "what": what,
                "mean_iou": round(mean["iou"], 5),
                "mean_dice": round(mean["dice"], 5),
                "mean_boundary_f1": round(mean["boundary_f1"], 4),
            }
        )
    show(f"edge refiner's ceiling on {len(records)} images of {data_dir} (tta={tta})", rows)
    return rows
