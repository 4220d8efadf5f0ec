"""How sure a cut-out is, without the truth: label-free signals of one prediction (how much the photo and its
mirror image disagree, in pixels of the mask and in how far their edges lie apart, how much of the edge is
uncertain, how far the edge refiner moved it, how much of it
runs where car and backdrop look alike, how much of the car is edge, the wrong pixels and edge misses its
own probabilities expect, the car's shape in the frame, its area and whether it leaves the frame), and a
small calibration that turns them into the predicted boundary F1 (2 px) of that photo,
fitted on photos of cars the model did not train on and stored in the checkpoint.

The calibration weighs the standardised signals equally, each with the direction fixed in advance, and fits
only the scale and level: on a few cars a full regression learns those cars, not the signals (car by car
it ranked worse than any single signal). It moves the weights towards the data's own only as far as
leaving each car out of the fit shows that this ranks the held-out car better.

Without a fitted calibration the score is the raw one, 1 / (1 + flip disagreement + uncertain share), both
per edge pixel: higher is better, 1 is perfectly sure, but it is not a boundary F1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from carseg.errors import CarsegError
from carseg.masks import edge_band, inner_edge

FEATURES = (
    "flip_disagreement",
    "flip_shift",
    "uncertain_share",
    "edge_entropy",
    "refiner_moved",
    "low_contrast_edge",
    "edge_per_area",
    "area",
    "touches_frame",
    "expected_error",
    "edge_miss",
    "box_fill",
    "solidity",
)
# the calibration's inputs: the per-edge-pixel signals enter as log1p, the rest as they are
LOGGED = {"flip_disagreement", "flip_shift", "uncertain_share", "refiner_moved"}
# the signals that read worse when higher (the area and the frame have no direction of their own)
WORSE_WHEN_HIGH = (
    "flip_disagreement",
    "flip_shift",
    "uncertain_share",
    "edge_entropy",
    "refiner_moved",
    "low_contrast_edge",
    "edge_per_area",  # the same edge error costs a car with more edge for its size more of its IoU
    "expected_error",
    "edge_miss",
)
UNCERTAIN = (0.1, 0.9)
# pixels from the mask's edge at which `edge_miss` reads the probability of the other side: an edge pixel
# further than the boundary F1's 2 px tolerance from the true edge is a miss
MISS_DISTANCE = 4
# the mask is read at 1/SHAPE_SCALE of its size for the car's shape (bounding box, convex hull)
SHAPE_SCALE = 4
# RGB distance (0..255) under which the car just inside its edge and the backdrop just outside look alike
LOW_CONTRAST = 24.0
# the photo is read at 1/CONTRAST_SCALE of its size for the contrast, in windows of CONTRAST_WINDOW pixels
CONTRAST_SCALE, CONTRAST_WINDOW = 4, 7
# how far the weights may move from equal towards the data's own (a ridge penalty around the equal weights,
# per photo): the first is equal weights; a larger one is chosen only where the held-out cars rank better
SHRINKAGE = (1e6, 3.0, 1.0, 0.3, 0.1)
# the share of photos a score is judged by flagging (the lowest), and of the worst photos it should catch
REVIEW_SHARE = 0.1
# a cut-out scoring under this is sent to review where the calibration has no threshold of its own, by what
# the score predicts (a raw score is not a boundary F1 and has its own scale)
REVIEW_BELOW = {"boundary_f1": 0.85, "iou": 0.98, "raw": 0.5}


def edge_pixels(mask: np.ndarray) -> int:
    """Pixels on the edge of a 0/1 mask (at least 1)."""
    return max(1, int(np.count_nonzero(inner_edge(mask))))


def low_contrast_edge(image: np.ndarray, mask: np.ndarray) -> float:
    """The share of the mask's edge where the photo's colour just inside it and just outside it differ by
    less than LOW_CONTRAST: paint close to the backdrop's colour, where cut-outs go wrong. Measured on the
    photo at 1/CONTRAST_SCALE of its size, each side's mean colour within CONTRAST_WINDOW pixels."""
    h, w = mask.shape
    size = (max(1, w // CONTRAST_SCALE), max(1, h // CONTRAST_SCALE))
    if h >= CONTRAST_SCALE and w >= CONTRAST_SCALE:  # a whole factor: OpenCV's fast path, 2-3x quicker
        image, mask = (
            image[: size[1] * CONTRAST_SCALE, : size[0] * CONTRAST_SCALE],
            mask[: size[1] * CONTRAST_SCALE, : size[0] * CONTRAST_SCALE],
        )
    photo = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    car = cv2.resize(mask.astype(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) / np.float32(255)
    window = (CONTRAST_WINDOW, CONTRAST_WINDOW)
    inside_share, outside_share = cv2.blur(car, window), cv2.blur(1.0 - car, window)
    edge = (inside_share > 0.2) & (outside_share > 0.2)  # both sides in the window: on the edge
    if not edge.any():
        return 0.0
    inside = cv2.blur(photo * car[..., None], window)[edge] / inside_share[edge, None]
    outside = cv2.blur(photo * (1.0 - car)[..., None], window)[edge] / outside_share[edge, None]
    return float((np.linalg.norm(inside - outside, axis=1) < LOW_CONTRAST).mean())


def edge_miss(prob: np.ndarray, mask: np.ndarray, distance: int = MISS_DISTANCE) -> float:
    """The chance, by the prediction's own probabilities, that the car's true edge lies `distance` pixels or
    more from the mask's edge: the mean probability of car on the ring `distance` pixels outside the edge plus
    the mean probability of backdrop on the ring as far inside it (0: sure to the last pixel). Read on every
    other pixel (`distance` / 2 there), a quarter of the work."""
    m, p, r = mask[::2, ::2].astype(np.uint8), prob[::2, ::2], max(1, distance // 2)
    wide, narrow = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)) for k in (r, r - 1))
    outside = cv2.dilate(m, wide) > cv2.dilate(m, narrow)
    inside = cv2.erode(m, narrow) > cv2.erode(m, wide)
    if not outside.any() or not inside.any():
        return 0.0
    return float(p[outside].mean() + 1.0 - p[inside].mean())


def expected_error(prob: np.ndarray, car_pixels: int) -> float:
    """The wrong pixels the probabilities expect (each pixel's chance of the other class), per car pixel
    (`car_pixels` of the mask); read on every other pixel."""
    p = prob[::2, ::2]
    return float(np.minimum(p, 1.0 - p).sum()) * 4.0 / max(1, car_pixels)


def shape(mask: np.ndarray) -> tuple[float, float]:
    """(box fill, solidity) of the car: its area over its bounding box's and over its convex hull's, on the
    mask at 1/SHAPE_SCALE of its size. The view shows in them (a car seen from the front fills its box more
    than one seen from the side), and so do shapes no car has."""
    small = mask[::SHAPE_SCALE, ::SHAPE_SCALE].astype(np.uint8)  # a contiguous copy, as OpenCV needs
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0
    points = np.concatenate(contours)
    area = float(small.sum())
    _, _, w, h = cv2.boundingRect(points)
    hull = cv2.convexHull(points)
    # the hull's pixels: its polygon through pixel centres, plus the half pixel around it (Pick's theorem)
    hull_pixels = cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0
    return area / (w * h), min(1.0, area / hull_pixels)


def features(
    prob: np.ndarray,
    flip_disagreement_px: float | None = None,
    coarse_mask: np.ndarray | None = None,
    image: np.ndarray | None = None,
    flip_shift_px: float | None = None,
) -> dict[str, float]:
    """The label-free signals of one prediction: `prob` (H, W) the final probability (0.5: the mask's
    threshold); `flip_disagreement_px` the pixels where the photo's and its mirror's masks disagree (at full
    size; None: not measured); `coarse_mask` the mask before the edge refiner (None: no refiner); `image`
    the photo (H, W, 3) uint8, for the contrast along the edge (None: not measured); `flip_shift_px` the sum
    over the photo of how far the photo's and its mirror's probabilities differ (at full size; None: not
    measured), which per edge pixel reads as how many pixels their edges lie apart."""
    mask = prob > 0.5
    edges = edge_pixels(mask)
    car = int(np.count_nonzero(mask))  # count_nonzero: several times faster than sum on a bool image
    lo, hi = UNCERTAIN
    near = edge_band(mask, 2)
    p = np.clip(prob[near], 1e-6, 1 - 1e-6) if near.any() else np.array([0.5])
    entropy = float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    box_fill, solidity = shape(mask)
    moved = 0 if coarse_mask is None else np.count_nonzero(coarse_mask.astype(bool, copy=False) != mask)
    return {
        "flip_disagreement": float("nan") if flip_disagreement_px is None else flip_disagreement_px / edges,
        "flip_shift": float("nan") if flip_shift_px is None else flip_shift_px / edges,
        "uncertain_share": float(np.count_nonzero((prob > lo) & (prob < hi))) / edges,
        "edge_entropy": entropy,
        "refiner_moved": float(moved) / edges,
        "low_contrast_edge": float("nan") if image is None else low_contrast_edge(image, mask),
        "edge_per_area": edges / max(1, car),
        "area": car / mask.size,
        "touches_frame": float(border.mean()),
        "expected_error": expected_error(prob, car),
        "edge_miss": edge_miss(prob, mask),
        "box_fill": box_fill,
        "solidity": solidity,
    }


def raw_score(signals: dict[str, float]) -> float:
    """The uncalibrated score in (0, 1]: 1 / (1 + flip disagreement + uncertain share), per edge pixel."""
    flip = signals.get("flip_disagreement", float("nan"))
    return 1.0 / (1.0 + (0.0 if np.isnan(flip) else flip) + signals["uncertain_share"])


def _design(rows: list[dict[str, float]], names: tuple[str, ...]) -> np.ndarray:
    x = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
    for j, name in enumerate(names):
        if name in LOGGED:
            x[:, j] = np.log1p(np.maximum(x[:, j], 0))
    return x


@dataclass
class QualityModel:
    """Predicted boundary F1 (or IoU, `target`) = clip(bias + weights · standardised features, 0, 1)."""

    names: tuple[str, ...]
    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    target: str = "boundary_f1"
    fitted_on: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def predict(self, signals: dict[str, float]) -> float:
        """The predicted `target` of one photo from its signals."""
        x = _design([signals], self.names)[0]
        if np.isnan(x).any():
            missing = [n for n, v in zip(self.names, x, strict=True) if np.isnan(v)]
            raise CarsegError(f"quality: the calibration needs {', '.join(missing)}, not measured for this photo")
        z = (x - np.array(self.mean)) / np.array(self.std)
        return float(np.clip(self.bias + z @ np.array(self.weights), 0.0, 1.0))

    def review_below(self) -> float:
        """The score under which a cut-out is sent to review: the calibration's own (the score of the
        REVIEW_SHARE worst of the photos it was fitted on), else REVIEW_BELOW's for its target."""
        return float(self.notes.get("review_below", REVIEW_BELOW.get(self.target, 0.0)))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (a checkpoint loads with weights_only=True)."""
        return {
            "names": list(self.names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "weights": [float(v) for v in self.weights],
            "bias": float(self.bias),
            "target": str(self.target),
            "fitted_on": int(self.fitted_on),
            "notes": {str(k): float(v) for k, v in self.notes.items()},
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> QualityModel:
        names = tuple(entry["names"])
        unknown = set(names) - set(FEATURES)
        if unknown or not (len(names) == len(entry["mean"]) == len(entry["std"]) == len(entry["weights"])):
            raise ValueError(f"unknown features {sorted(unknown)} or lengths that differ")
        return cls(
            names,
            list(entry["mean"]),
            list(entry["std"]),
            list(entry["weights"]),
            float(entry["bias"]),
            str(entry.get("target", "boundary_f1")),
            int(entry.get("fitted_on", 0)),
            dict(entry.get("notes", {})),
        )


def _signs(z: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Each signal's direction: -1 where higher is worse (fixed in advance), else its correlation's sign."""
    signs = []
    for j, name in enumerate(names):
        if name in WORSE_WHEN_HIGH:
            signs.append(-1.0)
        else:
            c = float(np.dot(z[:, j], y - y.mean()))
            signs.append(0.0 if abs(c) < 1e-12 else float(np.sign(c)))
    return np.array(signs)


def _fit(
    x: np.ndarray, y: np.ndarray, names: tuple[str, ...], shrinkage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, weights) of the signals `x` for `y` - mean: equal weights on the standardised signals
    along their directions (`_signs`), scaled by least squares (never reversed), moved towards the data's
    own under a ridge penalty `shrinkage` around them."""
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-9] = 1.0
    z = (x - mean) / std
    n, k = z.shape
    yc = y - y.mean()
    signs = _signs(z, y, names)
    combined = z @ signs
    prior = signs * max(0.0, float(combined @ yc) / max(float(combined @ combined), 1e-12))
    return mean, std, np.linalg.solve(z.T @ z + shrinkage * n * np.eye(k), z.T @ yc + shrinkage * n * prior)


def _choose_shrinkage(x: np.ndarray, y: np.ndarray, groups: list[str], names: tuple[str, ...]) -> float:
    """The SHRINKAGE whose fits, each leaving one group out, rank the held-out photos best (Spearman);
    ties go to the one nearer equal weights."""
    best, best_rho = SHRINKAGE[0], -np.inf
    labels = np.asarray(groups)
    for shrinkage in SHRINKAGE:
        scores = np.zeros(len(y))
        for group in sorted(set(groups)):
            out = labels == group
            mean, std, weights = _fit(x[~out], y[~out], names, shrinkage)
            scores[out] = ((x[out] - mean) / std) @ weights
        rho = spearman(scores, y)
        if np.isfinite(rho) and rho > best_rho + 1e-9:
            best, best_rho = shrinkage, rho
    return best


def fit_quality(
    rows: list[dict[str, float]],
    truth: list[float],
    target: str = "boundary_f1",
    names: tuple[str, ...] = FEATURES,
    groups: list[str] | None = None,
) -> QualityModel:
    """The calibration of the signals `rows` to the true `target` of the same photos: equal weights on the
    standardised signals (of `names`, those measured for every photo), scaled by least squares; with
    `groups` (the photos' car ids, at least 3 cars) the weights move towards the data's own as far as
    leaving each car out shows that this ranks it better (`SHRINKAGE`)."""
    if len(rows) != len(truth) or len(rows) < 8:
        raise CarsegError(f"quality calibration: {len(rows)} photos; it needs at least 8 with their true masks")
    names = tuple(n for n in names if all(np.isfinite(r.get(n, np.nan)) for r in rows))
    x = _design(rows, names)
    y = np.asarray(truth, dtype=np.float64)
    shrinkage = SHRINKAGE[0]
    if groups is not None and len(set(groups)) >= 3:
        shrinkage = _choose_shrinkage(x, y, list(groups), names)
    mean, std, weights = _fit(x, y, names, shrinkage)
    model = QualityModel(names, mean.tolist(), std.tolist(), weights.tolist(), float(y.mean()), target, len(rows))
    predicted = [model.predict(r) for r in rows]
    model.notes = {
        "spearman_in_sample": spearman(predicted, truth),
        "shrinkage": shrinkage,
        # on cars like these, it flags the REVIEW_SHARE it scores worst (a fixed 0.85 flags every photo of a
        # model whose boundary F1 is 0.76 everywhere)
        "review_below": float(np.quantile(predicted, REVIEW_SHARE)),
    }
    return model


def held_out_scores(
    rows: list[dict[str, float]],
    truth: list[float],
    groups: list[str],
    target: str = "boundary_f1",
    names: tuple[str, ...] = FEATURES,
) -> np.ndarray:
    """Each photo's calibrated score from a fit on the other groups' photos only (groups: the car ids, so
    that no car is scored by a calibration that saw it, nor chose its weights)."""
    scores = np.zeros(len(rows))
    for group in sorted(set(groups)):
        inside = [i for i, g in enumerate(groups) if g != group]
        model = fit_quality(
            [rows[i] for i in inside], [truth[i] for i in inside], target, names, [groups[i] for i in inside]
        )
        for i, g in enumerate(groups):
            if g == group:
                scores[i] = model.predict(rows[i])
    return scores


def spearman(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    import pandas as pd

    return float(pd.Series(np.asarray(a, float)).corr(pd.Series(np.asarray(b, float)), method="spearman"))


def caught(score: list[float] | np.ndarray, truth: list[float] | np.ndarray, share: float = 0.1) -> float:
    """Of the `share` of photos worst by `truth`, the part that flagging the `share` lowest `score`s catches."""
    score, truth = np.asarray(score, float), np.asarray(truth, float)
    k = max(1, round(share * len(score)))
    worst, flagged = set(np.argsort(truth, kind="stable")[:k]), set(np.argsort(score, kind="stable")[:k])
    return len(worst & flagged) / k


def ranking(score: np.ndarray, iou: np.ndarray, boundary_f1: np.ndarray) -> dict[str, float]:
    """How well `score` (higher: better) ranks photos by their true quality: Spearman with the true boundary
    F1 and IoU, and the part of the REVIEW_SHARE worst photos (by IoU; by boundary F1) that flagging the
    REVIEW_SHARE lowest scores catches."""
    return {
        "spearman_boundary_f1": round(spearman(score, boundary_f1), 4),
        "spearman_iou": round(spearman(score, iou), 4),
        "worst_10pct_caught": round(caught(score, iou, REVIEW_SHARE), 4),
        "worst_10pct_boundary_f1_caught": round(caught(score, boundary_f1, REVIEW_SHARE), 4),
    }


def risk_coverage(score: list[float] | np.ndarray, iou: list[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share sent to review, mean IoU of the photos accepted), sending the lowest scores first."""
    order = np.argsort(np.asarray(score, float), kind="stable")
    ious = np.asarray(iou, float)[order]
    n = len(ious)
    reviewed = np.arange(n) / n
    accepted = np.array([ious[k:].mean() for k in range(n)])
    return reviewed, accepted
