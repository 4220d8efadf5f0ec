"""Cross-validation by car: the folds of one multirun (`cv=kfold`) summarised as `cv_summary.json` and `.csv`
(each fold's best monitored metric, and their mean ± standard deviation)."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from carseg import console
from carseg.runs import CV_SUMMARY, CV_SUMMARY_CSV

FOLD_OVERRIDE = re.compile(r"(?:^|\s)datamodule\.fold=(\d+)(?:\s|$)")


def fold_of(overrides: str) -> int | None:
    """The fold a sweep job trained (its `datamodule.fold=K` override), if any."""
    found = FOLD_OVERRIDE.search(overrides)
    return int(found.group(1)) if found else None


def cv_summary(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """From the sweep summary's rows: each fold's best `metric` and checkpoint, and mean ± std over the folds
    that finished (None when the sweep did not vary `datamodule.fold`)."""
    folds = sorted(
        ({"fold": fold_of(r["overrides"]), **r} for r in rows if fold_of(r["overrides"]) is not None),
        key=lambda r: r["fold"],
    )
    if not folds:
        return None
    scores = [f["best"] for f in folds if f["best"] is not None]
    return {
        "monitor": metric,
        "mode": mode,
        "folds": [
            {"fold": f["fold"], "job": f["job"], "best": f["best"], "best_checkpoint": f["best_checkpoint"]}
            for f in folds
        ],
        "finished": len(scores),
        "mean": statistics.fmean(scores) if scores else None,
        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0 if scores else None,
    }


def write_cv_summary(sweep_dir: str | Path, summary: dict[str, Any]) -> Path:
    """`cv_summary.json` and `cv_summary.csv` in `sweep_dir`, and the table printed."""
    sweep_dir = Path(sweep_dir)
    (sweep_dir / CV_SUMMARY).write_text(json.dumps(summary, indent=2))
    with open(sweep_dir / CV_SUMMARY_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["fold", "job", "best", "best_checkpoint"])
        writer.writeheader()
        writer.writerows(summary["folds"])
    table = Table(title=f"Cross-validation by car: {len(summary['folds'])} folds, best {summary['monitor']}")
    for column in ("fold", "job", summary["monitor"]):
        table.add_column(column, justify="right")
    for fold in summary["folds"]:
        table.add_row(str(fold["fold"]), fold["job"], "failed" if fold["best"] is None else f"{fold['best']:.4f}")
    if summary["mean"] is not None:
        table.add_row("mean ± std", "", f"{summary['mean']:.4f} ± {summary['std']:.4f}", style="bold")
    Console(width=160).print(table)
    console.info(f"cross-validation summary in {sweep_dir / CV_SUMMARY}")
    return sweep_dir / CV_SUMMARY
