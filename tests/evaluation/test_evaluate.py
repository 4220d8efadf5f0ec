"""`evaluate.py` on a trained checkpoint: the files it writes and what they hold."""

import json

import pandas as pd
import pytest

from carseg.data.carvana import scan, split_by_car
from carseg.errors import CarsegError
from carseg.evaluation.run import evaluate
from tests.helpers import TINY_PAIRS, compose_cfg, run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    run_dir, best = trained
    out = tmp_path_factory.mktemp("eval")
    cfg = compose_cfg("evaluate", [f"paths.root_dir={run_dir.parents[3]}", "print_config=false", "worst_k=5"], out)
    return out, evaluate(cfg), best


def test_finds_the_newest_best_checkpoint_and_scores_it(evaluated, trained, tiny_data):
    out, summary, best = evaluated
    assert summary["checkpoint"].startswith(str(trained[0] / "checkpoints" / "epoch_"))
    val_cars = {r.car_id for r in split_by_car(scan(tiny_data), 0.34, seed=42)[1]}
    assert summary["images"] == 16 * len(val_cars)  # the validation cars of the training split, 16 photos each
    assert 0.8 < summary["mean_iou"] <= 1 and abs(summary["mean_iou"] - best) < 0.06
    assert summary["mean_dice"] > summary["mean_iou"] and summary["kaggle_score_mean_dice"] == summary["mean_dice"]
    assert summary["mean_iou_2class"] > summary["mean_iou"]
    assert summary["input_size"] == [64, 96]  # the training size, read from the checkpoint
    assert json.loads((out / "metrics.json").read_text()) == summary


def test_tables(evaluated):
    out, summary, _ = evaluated
    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image) == summary["images"] and {"car_id", "angle", "iou", "dice", "boundary_f1"} <= set(
        per_image.columns
    )
    assert per_image["iou"].mean() == pytest.approx(summary["mean_iou"])
    per_angle = pd.read_csv(out / "per_angle.csv")
    assert per_angle["angle"].tolist() == list(range(1, 17))
    assert (per_angle["images"] == per_image["car_id"].nunique()).all()
    worst = pd.read_csv(out / "worst.csv")
    assert len(worst) == 5 and worst["iou"].max() <= per_image["iou"].nsmallest(6).max()


def test_the_quality_score_is_reported_and_judged(evaluated):
    """Every photo has its label-free score and signals; metrics.json says how well it ranks them."""
    out, summary, _ = evaluated
    per_image = pd.read_csv(out / "per_image.csv")
    assert per_image["quality"].between(0, 1).all() and "q_flip_disagreement" in per_image
    quality = summary["quality"]
    assert quality["calibrated"] is False and quality["target"] == "raw"  # no calibration fitted
    assert -1 <= quality["spearman_boundary_f1"] <= 1 and 0 <= quality["worst_10pct_caught"] <= 1
    assert quality["spearman_iou"] == pytest.approx(per_image["quality"].corr(per_image["iou"], "spearman"), abs=1e-3)


def test_pictures(evaluated):
    out, _, _ = evaluated
    from PIL import Image

    for name in ("loss_curve.png", "iou_curve.png", "panels.png", "worst.png", "review_curve.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200


def test_any_folder_with_tta(best_ckpt, tiny_data, tmp_path):
    cfg = compose_cfg(
        "evaluate",
        [
            f"ckpt_path={best_ckpt}",
            f"eval_dir={tiny_data}",
            "tta=true",
            "print_config=false",
            f"paths.root_dir={tmp_path}",
        ],
        tmp_path / "eval",
    )
    summary = evaluate(cfg)
    assert summary["images"] == TINY_PAIRS and summary["tta_flip"] and summary["mean_iou"] > 0.8
    assert summary["edge_tta"] is False  # this checkpoint has no edge refiner


def test_no_checkpoint_is_a_clear_error(tmp_path):
    cfg = compose_cfg("evaluate", [f"paths.root_dir={tmp_path}", "print_config=false"], tmp_path / "eval")
    with pytest.raises(CarsegError, match="no checkpoint found"):
        evaluate(cfg)
    result = run_script("evaluate.py", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/e"])
    assert result.returncode == 2 and "make train" in result.stderr and "Traceback" not in result.stderr
