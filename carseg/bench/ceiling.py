"""The resolution ceiling: the best full-size IoU a model working at a smaller size can reach.

A perfect model at size (h, w) returns the true mask shrunk to (h, w): as 0/1 pixels when it was trained
on 0/1 masks, or as each pixel's car share when trained on soft masks. Upsampled back (bilinear, as
`Predictor` does) and thresholded, optionally refined along the photo's edges, it is scored against the
full-size truth. What is left below 1.0 is lost to the size alone, before any model error.
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
from carseg.evaluation.metrics import iou
from carseg.inference.refine import refine_probabilities


def run(
    data_dir: str | Path,
    sizes: Sequence[Sequence[int]] = ((160, 240), (320, 480)),
    images: int | None = None,
    refine_radius: int = 8,
    out: str | Path = "bench/ceiling.json",
) -> dict[str, Any]:
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
    payload = {"data": str(data_dir), "images": len(records), "ceiling": rows}
    write(out, payload)
    return payload
