"""A training recipe as a benchmark: train an experiment, time it, score it at full resolution.

`carseg bench recipe` measures the machine's bare training step rate at each of the recipe's sizes (so that
the wall times can be read against the day's speed), runs `carseg-train experiment=<name>`, then
`carseg-evaluate` on a Carvana-layout folder (at each image's own resolution) without and with flip TTA, the
checkpoint's edge refiner (when it has one) and, if asked, guided-filter refinement, and the edge refiner's
ceiling (the truth pasted into its band), and writes one JSON with the steps, minutes and img/s of each
stage, every score, the prediction time per photo and how many cars the edge refiner improved;
`--figures DIR` keeps the curves and prediction panels of the best scoring evaluation (small PNGs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from carseg import console, runs
from carseg.bench.ceiling import refiner_ceiling
from carseg.bench.edges import edge_figure
from carseg.bench.measure import build_module
from carseg.bench.report import show, write
from carseg.bench.train import Case, bare_loop
from carseg.config import compose_config, config_choices
from carseg.errors import CarsegError
from carseg.evaluation.calibrate import calibrate
from carseg.models.checkpoint import load_refiner

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
    console.info("$ " + " ".join(cmd[1:]))
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


def _cars_improved(evals: list[dict[str, Any]], outputs: list[Path]) -> None:
    """Per evaluation with the edge refiner: of the cars, how many it raised in mean IoU and boundary F1
    over the same evaluation without it."""
    for i, row in enumerate(evals):
        if not row["edge_refiner"]:
            continue
        j = next(
            k
            for k, other in enumerate(evals)
            if not other["edge_refiner"]
            and (other["tta_flip"], other["refine_radius"]) == (row["tta_flip"], row["refine_radius"])
        )
        new, old = (pd.read_csv(outputs[k] / "per_image.csv").groupby("car_id").mean(numeric_only=True) for k in (i, j))
        row["cars_improved_iou"] = f"{int((new['iou'] > old['iou']).sum())}/{len(new)}"
        row["cars_improved_boundary_f1"] = f"{int((new['boundary_f1'] > old['boundary_f1']).sum())}/{len(new)}"


def machine_speed(overrides: list[str], steps: int = 6) -> list[dict[str, Any]]:
    """The bare PyTorch training step rate (img/s) of the recipe's model, batch and precision at each of its
    training sizes, on this machine now."""
    cfg = compose_config("train", overrides)
    model = config_choices("train", overrides)["model"]
    dm = cfg.datamodule
    sizes = [tuple(stage["size"]) for stage in dm.get("size_schedule") or []] or [tuple(dm.image_size)]
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    channels_last = bool(cfg.model.get("channels_last", True))
    multiple = build_module(model).pad_multiple  # the bare loop feeds the network as it is: pad as carseg does
    rows = []
    for h, w in dict.fromkeys(sizes):
        size = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
        rate = bare_loop(Case(model, size, int(dm.batch_size), steps, 2, channels_last, bf16))
        rows.append({"size": f"{h}x{w}", "model": model, "bare step img/s": round(rate, 2)})
    return rows


def run(
    experiment: str,
    eval_dir: str,
    out: str,
    refine_radius: int = 0,
    figures: str | None = None,
    train_args: list[str] | None = None,
    run_dir: str | None = None,
    speed_steps: int = 6,
    calibrate_dir: str | None = None,
) -> dict[str, Any]:
    """Measure the machine's bare step (`speed_steps` timed steps a size), train (unless `run_dir` names a
    finished run), calibrate the quality score on `calibrate_dir` (None: on `eval_dir`, judged car by car)
    and evaluate; the JSON payload."""
    if not (Path(eval_dir) / "train").is_dir():
        raise CarsegError(f"{eval_dir}: no train/ folder; give a Carvana-layout folder to evaluate on")
    overrides = [f"experiment={experiment}", *(train_args or [])]
    speed = machine_speed(overrides, speed_steps)
    show("this machine's bare training step now (the day's speed)", speed)
    if run_dir is None:
        run_dir = str(Path("logs") / "bench" / f"{experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        _run([*TRAIN, *overrides, f"hydra.run.dir={Path(run_dir).resolve()}"])
    summary = runs.read_summary(run_dir)
    if summary is None:
        raise CarsegError(f"{Path(run_dir) / runs.SUMMARY}: missing; the training run did not finish")
    ckpt = str(runs.best_checkpoint(run_dir) or summary["best_checkpoint"])  # in this folder, if it was moved
    has_refiner = load_refiner(ckpt) is not None
    # the quality score's calibration, on the evaluation folder's cars (which the recipe never trains on; judged
    # car by car) or on another folder of cars the model did not train on: the evaluations below then judge
    # it on cars it was not fitted on
    calibration = calibrate(
        ckpt, calibrate_dir or eval_dir, tta=True, photos_csv=Path(run_dir) / "eval" / "calibration_photos.csv"
    )
    evals, outputs = [], []
    # every combination of flip TTA, the edge refiner and guided filtering; with TTA and the refiner also
    # the refiner without its own flip TTA (edge_tta=false), what that costs and buys
    arms = [
        (tta, edge, edge_tta, refine)
        for tta in (False, True)
        for edge in ((False, True) if has_refiner else (False,))
        for edge_tta in ((True, False) if tta and edge else (tta and edge,))
        for refine in ((0, refine_radius) if refine_radius else (0,))
    ]
    for tta, edge, edge_tta, refine in arms:
        name = f"tta{int(tta)}_edge{int(edge)}" + ("" if edge_tta == (tta and edge) else "_edgeflip0")
        eval_out = Path(run_dir) / "eval" / f"{name}_refine{refine}"
        outputs.append(eval_out)
        seconds = _run(
            [
                *EVALUATE,
                f"ckpt_path={ckpt}",
                f"eval_dir={Path(eval_dir).resolve()}",
                f"tta={str(tta).lower()}",
                f"edge_refiner={str(edge).lower()}",
                f"edge_tta={str(edge_tta).lower()}",
                f"refine_radius={refine}",
                "print_config=false",
                f"hydra.run.dir={eval_out}",
            ]
        )
        metrics = json.loads((eval_out / "metrics.json").read_text())
        per_angle = pd.read_csv(eval_out / "per_angle.csv")
        evals.append(
            {
                "tta_flip": tta,
                "edge_refiner": edge,
                "edge_tta": edge_tta,
                "refine_radius": refine,
                **{k: metrics[k] for k in SCORES},
                "min_angle_iou": round(float(per_angle["iou"].min()), 4),
                "images": metrics["images"],
                "predict_seconds_per_image": metrics.get("predict_seconds_per_image"),
                "eval_seconds": round(seconds, 1),
                "quality": metrics.get("quality"),
            }
        )
    _cars_improved(evals, outputs)
    ceiling = refiner_ceiling(ckpt, eval_dir, tta=True) if has_refiner else None
    recorded = runs.run_overrides(run_dir)
    if recorded is not None:  # what the run was actually started with
        overrides = [o for o in recorded if "hydra." not in o]
    payload = {
        "experiment": experiment,
        "command": " ".join(["python train.py", *overrides]),
        "run_dir": _in_project(run_dir),
        "train_minutes": round(summary.get("wall_seconds_with_refiner", summary["wall_seconds"]) / 60, 1),
        "stage1_minutes": round(summary["wall_seconds"] / 60, 1),
        "stage1_steps": summary.get("global_step"),
        "stage1_sizes": summary.get("stages"),
        "stage2_refiner": {k: v for k, v in (summary.get("refiner") or {}).items() if k != "checkpoints"} or None,
        "bare_step_rate": speed,
        "epochs": summary["epochs"],
        "best_val_iou_at_training_size": summary["best"],
        "best_checkpoint": _in_project(ckpt),
        "eval_dir": str(eval_dir),
        "evaluations": evals,
        "refiner_ceiling": ceiling,
        "quality_calibration": calibration,
    }
    shown = [{k: v for k, v in e.items() if k != "quality"} for e in evals]
    show(f"{experiment}: {payload['train_minutes']} min of training, scored on {eval_dir}", shown)
    write(out, payload)
    if figures:
        fig_dir = Path(figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        # the figures of the best scoring evaluation
        best = outputs[max(range(len(evals)), key=lambda i: (evals[i]["mean_iou"], evals[i]["tta_flip"]))]
        for name in ("loss_curve.png", "iou_curve.png", "panels.png", "worst.png", "review_curve.png"):
            if (best / name).is_file():
                _small_png(best / name, fig_dir / name)
        if has_refiner:
            _small_png(edge_figure(ckpt, eval_dir, Path(run_dir) / "edge_crops.png"), fig_dir / "edge_crops.png")
        if (fig_dir / Path(out).name).resolve() != Path(out).resolve():  # --out may already be in that folder
            shutil.copy(out, fig_dir / Path(out).name)
        console.info(f"figures written to {fig_dir}")
    return payload
