"""Tiny smoke runs of the benchmark scripts (the real runs are `make bench-*`, not tests)."""

import json

import pytest

from tests.helpers import TINY_PAIRS

pytestmark = pytest.mark.slow


def test_bench_train_smoke(tmp_path):
    from carseg.bench.train import SMOKE, run

    out = tmp_path / "train.json"
    run(**SMOKE, out=out)
    rows = json.loads(out.read_text())["train"]
    assert [r["setting"] for r in rows] == ["fp32", "channels_last", "channels_last+bf16"]
    assert all(r["bare img/s"] > 0 and r["carseg img/s"] > 0 and r["carseg/bare"] > 0 for r in rows)


def test_bench_infer_smoke(best_ckpt, tiny_data, tmp_path):
    from carseg.bench.infer import run

    out = tmp_path / "infer.json"
    run(tiny_data, ckpt=best_ckpt, images=2, compile_=False, rss=False, out=out, batches=(1, 2))
    result = json.loads(out.read_text())
    rows = {(r["path"], r["batch"], r["edge refiner"]): r for r in result["paths"]}
    onnx = "ONNX Runtime fp32 (CPUExecutionProvider)"
    eager = ("eager fp32", "channels_last fp32", "channels_last + bf16 autocast")
    expected = {(p, b, e) for p in eager for b in (1, 2) for e in (False, True)} | {(onnx, 1, False)}
    assert set(rows) == expected  # every path at every batch, with the (here untrained) edge refiner and without
    for edge in (False, True):
        assert rows[("eager fp32", 1, edge)]["mask agreement"] == 1.0  # the reference of its refiner setting
        assert rows[("eager fp32", 2, edge)]["mask agreement"] >= 0.999  # batching changes nothing that counts
    assert rows[(onnx, 1, False)]["mask agreement"] >= 0.999
    fastest = result["fastest_agreeing_rows"]
    assert fastest["refiner_off"]["counts"] and fastest["refiner_on"]["edge refiner"]
    assert result["gflop_per_forward"] > 0 and result["image_size"] == [96, 144]
    assert result["predictor_default_on_this_device"]["compile"] is None  # eager on a CPU

    run(tiny_data, ckpt=best_ckpt, images=2, compile_=False, rss=False, out=out, refiner=False, budget_s=0)
    skipped = [r for r in json.loads(out.read_text())["paths"] if "skipped" in r]
    assert len(skipped) == 2 and all("budget" in r["skipped"] for r in skipped)  # the reference row still runs


def test_bench_recipe_scores_a_finished_run(trained, tiny_data, tmp_path):
    import shutil

    from PIL import Image

    from carseg.bench.recipe import run
    from carseg.models.checkpoint import load_quality

    out = tmp_path / "fig" / "recipe.json"  # in the figures folder, as `make bench-carvana` writes it
    run_dir = tmp_path / "run"  # a copy: the recipe stores the quality calibration in the run's checkpoint
    shutil.copytree(trained[0], run_dir)
    run(
        "example",
        str(tiny_data),
        str(out),
        refine_radius=0,
        figures=str(tmp_path / "fig"),
        run_dir=str(run_dir),
        speed_steps=1,
    )
    result = json.loads(out.read_text())
    calibration = result["quality_calibration"]
    assert calibration["photos"] == TINY_PAIRS and -1 <= calibration["spearman_held_out_cars"] <= 1
    assert load_quality(next((run_dir / "checkpoints").glob("epoch_*.ckpt"))) is not None
    assert all(e["quality"]["calibrated"] for e in result["evaluations"])
    # the day's speed beside the wall times: the bare step of the experiment's model at each of its sizes
    assert result["bare_step_rate"] and all(r["bare step img/s"] > 0 for r in result["bare_step_rate"])
    assert result["stage1_steps"] == json.loads((trained[0] / "summary.json").read_text())["global_step"]
    evals = result["evaluations"]
    assert [(e["tta_flip"], e["refine_radius"]) for e in evals] == [(False, 0), (True, 0)]
    assert [e["edge_tta"] for e in evals] == [False, False]  # no refiner: no refiner arms
    assert all(0.5 < e["mean_iou"] <= e["mean_dice"] <= 1 and e["images"] == TINY_PAIRS for e in evals)
    assert result["best_val_iou_at_training_size"] == pytest.approx(trained[1])
    assert result["train_minutes"] > 0 and result["command"].startswith("python train.py")
    for name in ("loss_curve.png", "iou_curve.png", "panels.png"):
        with Image.open(tmp_path / "fig" / name) as im:
            assert im.width <= 1100 and im.mode == "P"


def test_the_refiners_ceiling_pastes_the_truth_into_its_band(best_ckpt, tiny_data):
    from carseg.bench.ceiling import refiner_ceiling

    rows = {r["what"]: r for r in refiner_ceiling(best_ckpt, tiny_data, bands=(1, 4), tta=False, images=4)}
    model, narrow, wide = rows["model, no refiner"], rows["truth pasted within 1 px"], rows["truth pasted within 4 px"]
    for key in ("mean_iou", "mean_dice", "mean_boundary_f1"):
        assert model[key] <= narrow[key] <= wide[key] <= 1
    assert wide["mean_iou"] > model["mean_iou"]


def test_bench_ceiling_orders_the_sizes(tiny_data, tmp_path):
    from carseg.bench.ceiling import run

    rows = run(tiny_data, sizes=[(24, 36), (48, 72)], images=3, refine_radius=0, out=tmp_path / "c.json")["ceiling"]
    score = {(r["size"], r["model output"]): r["ceiling IoU"] for r in rows}
    assert set(score) == {(s, k) for s in ("24x36", "48x72") for k in ("0/1 mask", "soft mask")}
    assert score[("24x36", "0/1 mask")] < score[("48x72", "0/1 mask")] < 1.0  # a larger size loses less
    assert score[("24x36", "0/1 mask")] < score[("24x36", "soft mask")]  # the car share holds sub-pixel edges
    assert json.loads((tmp_path / "c.json").read_text())["images"] == 3


def test_bench_predict_smoke(best_ckpt, tiny_data, tmp_path):
    from carseg.bench.predict import run

    out = tmp_path / "predict.json"
    run(tiny_data, ckpt=best_ckpt, images=8, processes=(1,), out=out)
    result = json.loads(out.read_text())
    (row,) = result["runs"]
    assert result["model_only_img_s"] > 0  # the model alone, beside the whole command
    # the JSON rounds rates to 0.01 img/s: what the test recomputes from them is off by up to 0.005 / rate
    rate, model_only = row["img/s (running)"], result["model_only_img_s"]
    slack = 0.006 / rate + 0.006 / model_only
    assert row["end-to-end / model-only"] == pytest.approx(rate / model_only, rel=0.05 + slack)
    assert row["processes"] == 1 and row["photos"] == 8 and rate > 0 and row["speed-up"] == 1
    assert row["hours for 100,064 photos"] == pytest.approx(100_064 / rate / 3600, rel=0.006 / rate, abs=0.01)


def test_bench_serve_smoke(small_ckpt, tiny_data, tmp_path):
    from carseg.bench.serve import run

    out = tmp_path / "serve.json"
    run(
        tiny_data,
        ckpt=small_ckpt,
        requests=6,
        concurrency=(1, 4),
        workers=1,
        queue=0,
        images=2,
        out=out,
        max_megapixels=4,
    )
    result = json.loads(out.read_text())
    by_level = {row["concurrency"]: row for row in result["load"]}
    assert by_level[1]["ok"] == 6 and by_level[1]["errors"] == 0 and by_level[1]["p50 ms"] > 0
    assert by_level[4]["ok"] + by_level[4]["rejected (503)"] == 6 and by_level[4]["errors"] == 0
    assert result["server_peak_rss_mb"] > 50 and result["capacity"] == 1
    big = result["request_at_pixel_limit"]  # one photo just under the limit: answered, its memory within the bound
    assert big["status"] == 200 and 3.9 < big["megapixels"] <= 4
    assert 0 < big["added_peak_mb"] <= result["request_memory_bound_mb"]


def test_bench_train_end_to_end_row(tiny_root, tmp_path):
    from carseg.bench.train import end_to_end
    from tests.helpers import tiny_overrides

    overrides = [o for o in tiny_overrides(tiny_root, tmp_path) if not o.startswith("paths.root_dir")]
    row = end_to_end("example", overrides=[*overrides, "model=fpn_resnet34", "trainer.precision=32-true"])
    assert row["model"] == "fpn_resnet34"  # the bare loop times the model the epoch trained
    assert row["size"] == "64x96" and row["batch"] == 8 and row["epoch images"] == 64  # 4 of 6 cars, 16 photos each
    assert row["real epoch img/s"] > 0 and row["bare step img/s"] > 0
    real, bare = row["real epoch img/s"], row["bare step img/s"]  # rounded to 0.01 img/s
    assert row["real/bare"] == pytest.approx(real / bare, rel=1e-2 + 0.006 / real + 0.006 / bare)


def test_asking_a_benchmark_for_cuda_without_a_gpu_is_one_line(monkeypatch):
    import torch

    from carseg.bench.measure import check_device
    from carseg.errors import CarsegError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("cpu", "bench train") == "cpu"
    with pytest.raises(CarsegError, match="bench train --device cuda: no CUDA device is visible"):
        check_device("cuda", "bench train")
