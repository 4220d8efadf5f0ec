"""Pictures of a run: loss and IoU curves from its logged metrics, prediction panels on new backgrounds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from carseg.drawing import PREDICTION_COLOUR, TRUTH_COLOUR, overlay  # noqa: E402
from carseg.errors import CarsegError  # noqa: E402
from carseg.models.quality import risk_coverage  # noqa: E402


def epoch_table(metrics_csv: str | Path) -> pd.DataFrame:
    """Lightning's CSV log reduced to one row per epoch (the last value of each metric)."""
    path = Path(metrics_csv)
    if not path.is_file():
        raise CarsegError(f"{path}: no metrics log (runs log it with the csv logger, part of logger=wandb)")
    frame = pd.read_csv(path)
    return frame.dropna(subset=["epoch"]).groupby("epoch").last()


def _curve(table: pd.DataFrame, columns: Sequence[str], ylabel: str, title: str, out: Path) -> Path | None:
    present = [c for c in columns if c in table and table[c].notna().any()]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for column in present:
        series = table[column].dropna()
        ax.plot(series.index + 1, series.values, marker="o", ms=3, label=column)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_curves(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """`loss_curve.png` and `iou_curve.png` in `out_dir`; returns the files written."""
    table = epoch_table(metrics_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        _curve(table, ["train/loss_epoch", "val/loss"], "loss", "Loss", out_dir / "loss_curve.png"),
        _curve(table, ["train/iou", "val/iou"], "IoU (Jaccard)", "IoU", out_dir / "iou_curve.png"),
    ]
    return [w for w in written if w is not None]


def picture_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    columns: Sequence[str],
    out: str | Path,
    title: str,
    cell: tuple[float, float],
    dpi: int,
    interpolation: str | None = None,
    title_size: float | None = None,
) -> Path:
    """Rows of (label, pictures) as a grid of images without axes, titled by `columns`, saved to `out`."""
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(cell[0], cell[1] * len(rows) + 0.4), dpi=dpi, squeeze=False
    )
    for r, (label, pictures) in enumerate(rows):
        for c, picture in enumerate(pictures):
            ax = axes[r][c]
            ax.imshow(picture, interpolation=interpolation)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=title_size)
        axes[r][0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def prediction_panels(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], out: str | Path, title: str = ""
) -> Path:
    """Rows of (name, image, true mask, predicted mask, composite) as input | truth | prediction | new background."""
    grid = [
        (name, [image, overlay(image, truth, TRUTH_COLOUR), overlay(image, pred, PREDICTION_COLOUR), comp])
        for name, image, truth, pred, comp in rows
    ]
    columns = ["input", "true mask", "predicted mask", "on a new background"]
    return picture_grid(grid, columns, out, title, cell=(13, 2.3), dpi=110)


def edge_spots(truth: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict[str, tuple[int, int]]:
    """Where to look at a car's edge, as (y, x) centres: the roof line (the car's top), the two wheels (its
    lowest points in the left and right halves of its extent) and the spot where the two masks differ most."""
    ys, xs = np.nonzero(truth)
    spots: dict[str, tuple[int, int]] = {}
    if len(ys) == 0:
        return spots
    top = ys.min()
    spots["roof line"] = (int(top), int(xs[ys == top].mean()))
    middle = (xs.min() + xs.max()) // 2
    for name, side in (("wheel, left", xs < middle), ("wheel, right", xs >= middle)):
        if side.any():
            low = ys[side].max()
            spots[name] = (int(low), int(xs[side][ys[side] == low].mean()))
    differ = (before > 0.5) != (after > 0.5)
    if differ.any():  # the peak of the changed pixels' density (a Gaussian of 8 px)
        density = cv2.GaussianBlur(differ.astype(np.float32), (0, 0), 8)
        y, x = np.unravel_index(int(density.argmax()), density.shape)
        spots["most changed"] = (int(y), int(x))
    return spots


def edge_crop_panels(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    columns: Sequence[str],
    out: str | Path,
    title: str = "",
) -> Path:
    """Rows of (label, pictures): zoomed full-size crops side by side, one column per way of cutting out."""
    cell = (3.1 * len(columns), 3.1)
    return picture_grid(rows, columns, out, title, cell=cell, dpi=100, interpolation="nearest", title_size=10)


def review_curve(score: Sequence[float], iou: Sequence[float], out: str | Path) -> Path:
    """Risk against coverage: the mean IoU of the photos accepted as the share sent to review (lowest quality
    score first) grows, beside the same by true IoU (the best any score could do) and at random."""
    score, iou = np.asarray(score, float), np.asarray(iou, float)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, order, style in (("quality score", score, "-"), ("true IoU (ideal)", iou, ":")):
        reviewed, accepted = risk_coverage(order, iou)
        ax.plot(reviewed * 100, accepted, style, label=label)
    ax.axhline(iou.mean(), color="grey", lw=0.8, label="at random")
    ax.set_xlabel("photos sent to review (%)")
    ax.set_ylabel("mean IoU of the photos accepted")
    ax.set_xlim(0, 50)
    ax.set_title(f"Review by quality score ({len(iou)} photos)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
