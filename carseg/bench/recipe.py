"""A training recipe as a benchmark: train an experiment, time it, score it at full resolution.

`carseg bench recipe` runs `carseg-train experiment=<name>`, then `carseg-evaluate` on a Carvana-layout folder
(at each image's own resolution) without and with flip TTA and boundary refinement, and writes one JSON
with the wall time and every score; `--figures DIR` keeps the curves and prediction panels of the best
scoring evaluation (small PNGs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from carseg import runs
from carseg.bench.report import show, write
from carseg.errors import CarsegError

TRAIN = [sys.executable, "-m", "carseg.entrypoints.train"]
EVALUATE = [sys.executable, "-m", "carseg.entrypoints.evaluate"]
SCORES = (
    "mean_iou",
    "mean_dice",
    "mean_iou_2class",
    "mean_pixel_accuracy",
    "mean_boundary_f1",
    "mean_edge_error",
    "mean_edge_error_mask",
)


def _run(cmd: list[str]) -> float:
    """Run a carseg entry point in the current directory (the project); its wall time in seconds."""
    print("carseg: $ " + " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd)
    if done.returncode:
        raise CarsegError(f"`{' '.join(cmd[1:])}` failed (exit {done.returncode}); its log is above")
    return time.perf_counter() - start


def _in_project(path: str | Path) -> str:
    """`path` relative to the project (the current directory) when it lies inside it, so that the JSON reads
    the same on any machine."""
    p, root = Path(path).resolve(), Path.cwd().resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _small_png(src: Path, dst: Path, width: int = 1100) -> None:
    """A README-sized copy: at most `width` pixels wide, 256-colour palette."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        im.quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def run(
    experiment: str,
    eval_dir: str,
    out: str,
    refine_radius: int = 8,
    figures: str | None = None,
    train_args: list[str] | None = None,
    run_dir: str | None = None,
) -> dict[str, Any]:
    """Train (unless `run_dir` names a finished run) and evaluate; the JSON payload."""
    if not (Path(eval_dir) / "train").is_dir():
        raise CarsegError(f"{eval_dir}: no train/ folder; give a Carvana-layout folder to evaluate on")
    overrides = [f"experiment={experiment}", *(train_args or [])]
    if run_dir is None:
        run_dir = str(Path("logs") / "bench" / f"{experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        _run([*TRAIN, *overrides, f"hydra.run.dir={Path(run_dir).resolve()}"])
    summary = runs.read_summary(run_dir)
    if summary is None:
        raise CarsegError(f"{Path(run_dir) / runs.SUMMARY}: missing; the training run did not finish")
    ckpt = summary["best_checkpoint"]
    evals, outputs = [], []
    for tta in (False, True):
        for refine in (0, refine_radius) if refine_radius else (0,):
            eval_out = Path(run_dir) / "eval" / f"tta{int(tta)}_refine{refine}"
            outputs.append(eval_out)
            seconds = _run(
                [
                    *EVALUATE,
                    f"ckpt_path={ckpt}",
                    f"eval_dir={Path(eval_dir).resolve()}",
                    f"tta={str(tta).lower()}",
                    f"refine_radius={refine}",
                    "print_config=false",
                    f"hydra.run.dir={eval_out}",
                ]
            )
            metrics = json.loads((eval_out / "metrics.json").read_text())
            evals.append(
                {
                    "tta_flip": tta,
                    "refine_radius": refine,
                    **{k: metrics[k] for k in SCORES},
                    "images": metrics["images"],
                    "eval_seconds": round(seconds, 1),
                }
            )
    recorded = runs.run_overrides(run_dir)
    if recorded is not None:  # what the run was actually started with
        overrides = [o for o in recorded if "hydra." not in o]
    payload = {
        "experiment": experiment,
        "command": " ".join(["python train.py", *overrides]),
        "run_dir": _in_project(run_dir),
        "train_minutes": round(summary["wall_seconds"] / 60, 1),
        "epochs": summary["epochs"],
        "best_val_iou_at_training_size": summary["best"],
        "best_checkpoint": _in_project(ckpt),
        "eval_dir": str(eval_dir),
        "evaluations": evals,
    }
    show(f"{experiment}: {payload['train_minutes']} min of training, scored on {eval_dir}", evals)
    write(out, payload)
    if figures:
        fig_dir = Path(figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        # the figures of the best scoring evaluation
        best = outputs[max(range(len(evals)), key=lambda i: (evals[i]["mean_iou"], evals[i]["tta_flip"]))]
        for name in ("loss_curve.png", "iou_curve.png", "panels.png", "worst.png"):
            if (best / name).is_file():
                _small_png(best / name, fig_dir / name)
        shutil.copy(out, fig_dir / Path(out).name)
        print(f"carseg: figures written to {fig_dir}")
    return payload
