"""The quality score of a cut-out: label-free signals, their calibration through the checkpoint, and a
constructed case where the photo and its mirror image disagree."""

import gzip
import shutil
import time

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from carseg.errors import CarsegError
from carseg.evaluation.calibrate import judge, score_cost
from carseg.inference.predictor import Predictor
from carseg.models.checkpoint import embed_quality, load_quality
from carseg.models.quality import (
    FEATURES,
    QualityModel,
    caught,
    edge_pixels,
    features,
    fit_quality,
    raw_score,
    risk_coverage,
    shape,
)
from tests.helpers import ROOT


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "small.ckpt"
    with gzip.open(ROOT / "tests/fixtures/legacy_unet_mnv3s_64x96.ckpt.gz") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def _car(h=64, w=96) -> np.ndarray:
    prob = np.full((h, w), 0.02, np.float32)
    prob[20:50, 15:80] = 0.98
    return prob


def test_disagreement_and_doubt_lower_the_raw_score():
    sure = features(_car(), flip_disagreement_px=0, image=np.zeros((64, 96, 3), np.uint8), flip_shift_px=0)
    assert set(sure) == set(FEATURES) and sure["uncertain_share"] == 0 and sure["refiner_moved"] == 0
    flipped = features(_car(), flip_disagreement_px=300)
    doubtful = _car()
    doubtful[18:22, :] = 0.5
    assert raw_score(sure) == 1.0 > raw_score(features(doubtful, 0)) and raw_score(flipped) < raw_score(sure)
    moved = features(_car(), 0, coarse_mask=np.zeros((64, 96), bool))
    assert moved["refiner_moved"] > 5  # the refiner made the whole car
    assert sure["flip_shift"] == 0 and features(_car(), 0, flip_shift_px=186.0)["flip_shift"] == 1.0


def test_an_edge_where_car_and_backdrop_look_alike_is_measured():
    """A grey car on a grey backdrop has its whole edge in low contrast; a dark car on it none; a car whose
    lower half matches the backdrop about half."""
    prob = np.full((256, 384), 0.02, np.float32)
    prob[60:200, 60:320] = 0.98
    mask = prob > 0.5
    photos = {}
    for name, colour in (("alike", 128), ("dark", 20)):
        photo = np.full((256, 384, 3), 128, np.uint8)
        photo[mask] = colour
        photos[name] = photo
    half = photos["dark"].copy()
    half[130:][mask[130:]] = 128
    share = {name: features(prob, 0, None, photo)["low_contrast_edge"] for name, photo in photos.items()}
    assert share["alike"] == 1.0 and share["dark"] == 0.0
    assert 0.2 < features(prob, 0, None, half)["low_contrast_edge"] < 0.8
    assert np.isnan(features(prob, 0)["low_contrast_edge"])  # no photo: not measured


def test_a_photo_whose_mirror_disagrees_scores_lower(ckpt, monkeypatch):
    """Through the predictor: a model that sees a car only on the left half of what it is shown disagrees
    with its mirror image everywhere; one that sees it in the middle does not."""
    predictor = Predictor(ckpt=ckpt, input_size=None)
    image = np.zeros((64, 96, 3), np.uint8)

    def lopsided(batch, module=None):
        out = torch.full((batch.shape[0], 1, *batch.shape[-2:]), -4.0)
        out[..., 16:48, 8:40] = 4.0  # not symmetric about the middle
        return out

    def centred(batch, module=None):
        out = torch.full((batch.shape[0], 1, *batch.shape[-2:]), -4.0)
        out[..., 16:48, 24:72] = 4.0
        return out

    scores = {}
    for name, fake in (("lopsided", lopsided), ("centred", centred)):
        monkeypatch.setattr(predictor, "_logits", fake)
        ((mask, alpha, quality),) = predictor.assess([image])
        assert quality["calibrated"] is False and quality["target"] == "raw"
        scores[name] = quality
        ((plain_mask, plain_alpha),) = predictor.mattes([image])
        np.testing.assert_array_equal(mask, plain_mask)  # assessing changes no cut-out
    assert scores["centred"]["flip_disagreement"] == 0 and scores["lopsided"]["flip_disagreement"] > 1
    assert scores["lopsided"]["score"] < scores["centred"]["score"]


def test_a_mirror_whose_edge_lies_a_fraction_of_a_pixel_apart_reads_as_that_shift(ckpt, monkeypatch):
    """A model whose soft edge lies a quarter of its pixel further right in the mirror image: the 0/1 masks
    agree (flip_disagreement 0), but flip_shift reads the shift: 0.25 of the model's pixel at both sides of
    16 of its rows, 32 pixels at the photo's twice larger size, per edge pixel; a model that sees both
    alike reads none."""
    predictor = Predictor(ckpt=ckpt, input_size=(32, 48))
    image = np.zeros((64, 96, 3), np.uint8)
    cols, rows = torch.arange(48, dtype=torch.float32), torch.arange(32, dtype=torch.float32)[:, None]

    def car(offset: float) -> torch.Tensor:
        """A car from column 12.3 to 35.7 (+ `offset`), rows 8 to 24, with soft left and right edges."""
        sides = torch.minimum(cols - 12.3 - offset, 35.7 + offset - cols) * 2.0
        return torch.minimum(sides[None, :], torch.where((rows >= 8) & (rows < 24), 8.0, -8.0))

    def model(offset: float):
        calls = []

        def logits(batch, module=None):
            calls.append(1)
            out = car(0.0) if len(calls) % 2 else car(offset).flip(-1)  # the mirror's, flipped back later
            return out.expand(batch.shape[0], 1, 32, 48).clone()

        return logits

    readings = {}
    for name, offset in (("alike", 0.0), ("shifted", 0.25)):
        monkeypatch.setattr(predictor, "_logits", model(offset))
        ((mask, _, readings[name]),) = predictor.assess([image])
    assert readings["alike"]["flip_shift"] == 0 and readings["shifted"]["flip_disagreement"] == 0
    assert readings["shifted"]["flip_shift"] == pytest.approx(32 / edge_pixels(mask), rel=0.1)


def test_the_calibration_round_trips_through_the_checkpoint(ckpt):
    rng = np.random.default_rng(0)
    rows = [features(_car(), flip_disagreement_px=float(d)) for d in rng.uniform(0, 400, 40)]
    truth = [1 / (1 + r["flip_disagreement"]) for r in rows]  # worse with more disagreement
    model = fit_quality(rows, truth)
    assert model.notes["spearman_in_sample"] > 0.9 and "flip_disagreement" in model.names
    embed_quality(ckpt, model)
    loaded = load_quality(ckpt)
    assert loaded == QualityModel.from_dict(model.to_dict())
    predictor = Predictor(ckpt=ckpt)
    assert predictor.quality_model is not None
    ((_, _, quality),) = predictor.assess([np.zeros((64, 96, 3), np.uint8)])
    assert quality["calibrated"] and quality["target"] == "boundary_f1" and 0 <= quality["score"] <= 1
    # it sends to review the share of photos it scored worst when fitted, not those under a fixed 0.85
    fitted = sorted(model.predict(r) for r in rows)
    assert fitted[0] <= model.review_below() <= fitted[len(fitted) // 5]
    assert quality["review"] == (quality["score"] < model.review_below())
    older = QualityModel.from_dict({**model.to_dict(), "notes": {}})  # a calibration stored without one
    assert older.review_below() == 0.85
    with pytest.raises(CarsegError, match="at least 8"):
        fit_quality(rows[:3], truth[:3])


def test_a_car_with_more_edge_for_its_size_says_so():
    square, thin = np.zeros((64, 96), np.float32), np.zeros((64, 96), np.float32)
    square[12:52, 28:68] = 1.0  # 1600 pixels
    thin[28:36, 0:96] = 1.0  # 768 pixels, nearly all of them edge-adjacent
    assert features(thin, 0)["edge_per_area"] > 2 * features(square, 0)["edge_per_area"] > 0


def test_a_soft_edge_expects_more_wrong_pixels_and_edge_misses_than_a_sharp_one():
    """The probabilities' own expectation: a car whose edge fades over many pixels expects more wrong pixels
    per car pixel and a larger chance that its true edge lies 4 px or more from the mask's; a sharp one none."""
    sharp = np.zeros((128, 192), np.float32)
    sharp[32:96, 40:150] = 1.0
    soft = cv2.GaussianBlur(sharp, (0, 0), 4)
    a, b = features(sharp, 0), features(soft, 0)
    assert a["expected_error"] == 0.0 and a["edge_miss"] == 0.0
    assert b["expected_error"] > 0.01 and 0.05 < b["edge_miss"] < 1.0
    slight = features(cv2.GaussianBlur(sharp, (0, 0), 1), 0)
    assert a["edge_miss"] < slight["edge_miss"] < b["edge_miss"]


def test_the_cars_shape_is_measured_by_its_box_and_hull():
    """A box fills its bounding box and its hull; a disc fills about pi/4 of its box and all its hull; a car
    with a bite out of it less of its hull."""
    box, disc = np.zeros((256, 384), bool), np.zeros((256, 384), bool)
    box[64:192, 96:288] = True
    yy, xx = np.mgrid[:256, :384]
    disc[(yy - 128) ** 2 + (xx - 192) ** 2 < 100**2] = True
    bitten = box.copy()
    bitten[64:150, 150:230] = False
    (box_fill, box_solid), (disc_fill, disc_solid) = shape(box), shape(disc)
    assert box_fill > 0.99 and box_solid > 0.97
    assert abs(disc_fill - np.pi / 4) < 0.03 and disc_solid > 0.95
    assert shape(bitten)[1] < 0.8 and shape(np.zeros((64, 96), bool)) == (0.0, 0.0)
    signals = features(disc.astype(np.float32), 0)
    assert (signals["box_fill"], signals["solidity"]) == shape(disc)


def test_the_calibration_weighs_the_signals_equally_unless_held_out_cars_say_otherwise():
    """Without car ids every measured signal gets the same weight (its direction fixed where higher is worse);
    with them, a signal that alone carries the truth in every car gets the larger weight, as leaving each car
    out shows that this ranks it better."""
    rng = np.random.default_rng(2)
    rows, truth, cars = [], [], []
    for car in range(6):
        for _ in range(12):
            signals = {n: float(rng.uniform(0, 1)) for n in FEATURES}
            rows.append(signals)
            truth.append(0.9 - 0.2 * signals["uncertain_share"] + float(rng.normal(0, 0.005)))
            cars.append(f"car{car}")
    equal = fit_quality(rows, truth)
    magnitudes = np.abs(equal.weights)
    np.testing.assert_allclose(magnitudes, magnitudes[0], rtol=1e-4)
    worse = [n for n in equal.names if n in ("uncertain_share", "edge_entropy", "flip_disagreement")]
    assert all(equal.weights[equal.names.index(n)] < 0 for n in worse)  # higher is worse: never reversed
    chosen = fit_quality(rows, truth, groups=cars)
    assert chosen.notes["shrinkage"] < equal.notes["shrinkage"]
    w = dict(zip(chosen.names, np.abs(chosen.weights), strict=True))
    assert w["uncertain_share"] > 3 * max(v for n, v in w.items() if n != "uncertain_share")


def test_ranking_helpers():
    score, truth = [0.1, 0.2, 0.9, 0.8, 0.95], [0.5, 0.6, 0.99, 0.97, 0.98]
    assert caught(score, truth, 0.4) == 1.0
    reviewed, accepted = risk_coverage(score, truth)
    assert reviewed[0] == 0 and accepted[0] == pytest.approx(np.mean(truth)) and accepted[-1] == 0.98
    assert np.all(np.diff(accepted[:3]) > 0)  # sending the lowest scores first raises the accepted mean


def test_the_judgement_says_what_each_signal_contributes():
    """Photos of 8 cars whose true quality follows the flip disagreement alone: the score ranks them well
    car by car, that signal alone ranks them as well, and the score without it loses the ranking; a signal
    of pure noise adds nothing."""
    rng = np.random.default_rng(1)
    rows = []
    for car in range(8):
        for angle in range(16):
            flip = float(rng.uniform(0, 3))
            bf1 = 0.95 - 0.2 * flip + float(rng.normal(0, 0.01))
            signals = {n: float(rng.uniform(0, 1)) for n in FEATURES}
            signals["flip_disagreement"] = flip
            rows.append({"car_id": f"car{car}", "image": f"{car}_{angle}.jpg", "boundary_f1": bf1, **signals})
            rows[-1]["iou"] = 1 - (1 - bf1) / 10
    judged = judge(pd.DataFrame(rows))
    held_out, signals = judged["held_out_cars"], judged["signals"]
    assert held_out["spearman_boundary_f1"] > 0.9 and held_out["worst_10pct_caught"] >= 0.7
    assert signals["flip_disagreement"]["alone"]["spearman_boundary_f1"] > 0.9
    assert signals["flip_disagreement"]["score_without_it"]["spearman_boundary_f1"] < 0.3
    noise = signals["edge_entropy"]
    assert abs(noise["alone"]["spearman_boundary_f1"]) < 0.3 and noise["direction"] == "higher is worse"
    assert noise["score_without_it"]["spearman_boundary_f1"] > 0.9
    assert "from the data" in signals["area"]["direction"]


def test_the_score_cost_is_the_time_it_adds(monkeypatch):
    """On a clock that each cut-out advances by a known time, the score's cost is exactly what it adds, and
    the warm-up photo is not counted."""
    clock = [0.0]

    class Timed:
        def mattes(self, images):
            clock[0] += 1.0 * len(images)

        def assess(self, images):
            clock[0] += 1.25 * len(images)

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    cost = score_cost(Timed(), [np.zeros((4, 4, 3), np.uint8)] * 3)
    assert cost == {
        "photos": 3,
        "seconds_per_photo_without_score": 1.0,
        "seconds_per_photo_with_score": 1.25,
        "added_share": 0.25,
    }
    assert clock[0] == 2.25 * 4  # three photos and the warm-up, each cut out both ways


@pytest.mark.slow
def test_carseg_calibrate_fits_on_unseen_cars_and_the_checkpoint_then_predicts_the_score(
    best_ckpt, tiny_data, tmp_path
):
    """Through the command: fit on a folder of cars, judged car by car, stored; the predictor then gives a
    calibrated score that evaluate.py judges against the truth."""
    import json

    from carseg.cli import main as cli

    ckpt = tmp_path / "model.ckpt"
    shutil.copy(best_ckpt, ckpt)
    report = tmp_path / "calibration.json"
    photos = tmp_path / "photos.csv"
    cli(
        [
            "calibrate",
            str(tiny_data),
            "--ckpt",
            str(ckpt),
            "--out",
            str(report),
            "--images",
            "48",
            "--photos",
            str(photos),
        ]
    )
    result = json.loads(report.read_text())
    assert result["photos"] == 48 and result["cars"] == 3 and result["target"] == "boundary_f1"
    table = pd.read_csv(photos)
    assert len(table) == 48 and set(FEATURES) <= set(table.columns) and table["iou"].between(0, 1).all()
    assert set(result["signals"]) == set(result["features"]) and result["cost"]["photos"] == 8
    assert -1 <= result["spearman_held_out_cars"] <= 1 and 0 <= result["mean_abs_error_held_out_cars"] <= 1
    quality = load_quality(ckpt)
    assert quality is not None and quality.fitted_on == 48 and list(quality.names) == result["features"]
    ((_, _, scored),) = Predictor(ckpt=ckpt).assess([np.zeros((64, 96, 3), np.uint8)])
    assert scored["calibrated"] and 0 <= scored["score"] <= 1
    dry = tmp_path / "other.ckpt"
    shutil.copy(best_ckpt, dry)
    cli(["calibrate", str(tiny_data), "--ckpt", str(dry), "--images", "48", "--dry-run"])
    assert load_quality(dry) is None
