"""Sweeps: a Hydra callback that summarises every job of a multirun in `sweep_summary.csv` and a table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from carseg import console, runs
from carseg.training.crossval import cv_summary, write_cv_summary


def ranked(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Rows best first by `mode` (max or min); failed jobs (no score) last."""
    scored = sorted((r for r in rows if r["best"] is not None), key=lambda r: r["best"], reverse=mode == "max")
    return scored + [r for r in rows if r["best"] is None]


def summarise(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job directory under `sweep_dir`: its overrides and its best monitored metric."""
    rows = []
    for job in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides = runs.run_overrides(job) if job.is_dir() else None
        if overrides is None:
            continue
        summary = runs.read_summary(job) or {}
        rows.append(
            {
                "job": job.name,
                "overrides": " ".join(overrides),
                "monitor": summary.get("monitor"),
                "mode": summary.get("mode"),
                "best": summary.get("best"),
                "epochs": summary.get("epochs"),
                "minutes": round(summary["wall_seconds"] / 60, 2) if "wall_seconds" in summary else None,
                "best_checkpoint": summary.get("best_checkpoint"),
            }
        )
    return rows


class SweepSummary(Callback):
    """At the end of a multirun: `<sweep dir>/sweep_summary.csv` and a table, best job first (by the run's
    `optimized_metric` and `optimized_mode`), failed jobs last."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        metric, mode = config.get("optimized_metric", "val/iou"), config.get("optimized_mode", "max")
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = ranked(summarise(sweep_dir), mode)
        if not rows:
            return
        with open(sweep_dir / runs.SWEEP_SUMMARY, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        shared = set.intersection(*(set(r["overrides"].split()) for r in rows))  # shown once, in the title
        table = Table(title=f"Sweep {sweep_dir.name}: {len(rows)} jobs, ranked by best {metric} ({mode})")
        for column in ("job", "overrides", "best", "epochs", "minutes"):
            table.add_column(column, justify="left" if column == "overrides" else "right")
        for row in rows:
            best = "failed" if row["best"] is None else f"{row['best']:.4f}"
            varying = " ".join(o for o in row["overrides"].split() if o not in shared)
            table.add_row(row["job"], varying, best, str(row["epochs"]), str(row["minutes"]))
        Console(width=200).print(table)
        console.info(f"sweep summary in {sweep_dir / runs.SWEEP_SUMMARY}")
        folds = cv_summary(rows, metric, mode)
        if folds is not None:
            write_cv_summary(sweep_dir, folds)
