"""Sweeps: a Hydra callback that summarises every job of a multirun in `sweep_summary.csv` and a table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table


def summarise(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job directory under `sweep_dir`: its overrides and its best monitored metric."""
    rows = []
    for job in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        if not job.is_dir() or not overrides_file.is_file():
            continue
        summary_file = job / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        rows.append(
            {
                "job": job.name,
                "overrides": " ".join(OmegaConf.load(overrides_file)),
                "monitor": summary.get("monitor", "val/iou"),
                "best": summary.get("best"),
                "epochs": summary.get("epochs"),
                "minutes": round(summary["wall_seconds"] / 60, 2) if "wall_seconds" in summary else None,
                "best_checkpoint": summary.get("best_checkpoint"),
            }
        )
    return rows


class SweepSummary(Callback):
    """At the end of a multirun: `<sweep dir>/sweep_summary.csv` and a table, best job first."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = summarise(sweep_dir)
        if not rows:
            return
        with open(sweep_dir / "sweep_summary.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        ranked = sorted(rows, key=lambda r: -1.0 if r["best"] is None else r["best"], reverse=True)
        shared = set.intersection(*(set(r["overrides"].split()) for r in rows))  # shown once, in the title
        table = Table(title=f"Sweep {sweep_dir.name}: {len(rows)} jobs, ranked by best {rows[0]['monitor']}")
        for column in ("job", "overrides", "best", "epochs", "minutes"):
            table.add_column(column, justify="left" if column == "overrides" else "right")
        for row in ranked:
            best = "failed" if row["best"] is None else f"{row['best']:.4f}"
            varying = " ".join(o for o in row["overrides"].split() if o not in shared)
            table.add_row(row["job"], varying, best, str(row["epochs"]), str(row["minutes"]))
        Console(width=200).print(table)
        print(f"carseg: sweep summary in {sweep_dir / 'sweep_summary.csv'}")
