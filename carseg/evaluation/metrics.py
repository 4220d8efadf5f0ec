"""Per-image segmentation metrics at full resolution: IoU, Dice, 2-class mean IoU, accuracy, boundary F1, and
the edge composite error of the cut-out."""

from __future__ import annotations

import cv2
import numpy as np

from carseg.masks import edge_band, inner_edge


def boundary_f1(pred: np.ndarray, truth: np.ndarray, tolerance: int = 2) -> float:
    """F1 of boundary pixels matched within `tolerance` pixels (1.0 when both masks are empty)."""
    bp, bt = inner_edge(pred), inner_edge(truth)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    dist_to_truth = cv2.distanceTransform((~bt).astype(np.uint8), cv2.DIST_L2, 3)
    dist_to_pred = cv2.distanceTransform((~bp).astype(np.uint8), cv2.DIST_L2, 3)
    precision = float((dist_to_truth[bp] <= tolerance).mean())
    recall = float((dist_to_pred[bt] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Car IoU of one predicted mask against the truth (both H x W, 0/1); 1.0 when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    union = np.count_nonzero(p | t)
    return np.count_nonzero(p & t) / union if union else 1.0


def image_metrics(pred: np.ndarray, truth: np.ndarray, tolerance: int = 2) -> dict[str, float]:
    """Metrics of one predicted mask against the truth (both H x W, 0/1)."""
    p, t = pred.astype(bool), truth.astype(bool)
    tp = float(np.count_nonzero(p & t))
    fp = float(np.count_nonzero(p & ~t))
    fn = float(np.count_nonzero(~p & t))
    tn = float(p.size) - tp - fp - fn
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    iou_bg = tn / (tn + fp + fn) if tn + fp + fn else 1.0
    return {
        "iou": iou,
        "dice": dice,
        "iou_2class": (iou + iou_bg) / 2,
        "pixel_accuracy": (tp + tn) / p.size,
        "boundary_f1": boundary_f1(p, t, tolerance),
    }


# a background far from the studio's greys and whites, so that a halo of the old background shows
EDGE_BACKGROUND = (30, 144, 255)


def edge_composite_error(
    image: np.ndarray, alpha: np.ndarray, truth: np.ndarray, band: int = 3, background: tuple = EDGE_BACKGROUND
) -> float:
    """Mean absolute RGB difference (0..255) between the photo composited on `background` through `alpha`
    and through the true mask, over the pixels within `band` pixels of the true edge (0 without an edge)."""
    near = edge_band(truth, band)
    if not near.any():
        return 0.0
    # photo * a + ground * (1 - a) - (photo * m + ground * (1 - m)) = (photo - ground) * (a - m)
    photo = image[near].astype(np.float32) - np.asarray(background, np.float32)
    share = alpha[near].astype(np.float32) - truth[near].astype(np.float32)
    return float(np.abs(photo * share[:, None]).mean())
