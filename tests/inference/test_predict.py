"""`carseg predict` and `carseg export`: outputs at each input's own size, submissions, ONNX, bad input."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carseg.cli import main as cli
from carseg.data.carvana import read_rle_table
from carseg.data.rle import rle_decode
from carseg.errors import CarsegError
from carseg.inference.background import composite, cutout, load_background
from carseg.inference.predictor import Predictor
from carseg.inference.run import predict
from carseg.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture
def photos(tiny_data, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((tiny_data / "train").glob("*.jpg"))[:3]:
        shutil.copy(src, folder)
    big = Image.open(next(folder.iterdir())).resize((216, 144))
    big.save(folder / "other_size.png")
    (folder / "notes.txt").write_text("not a photo")  # ignored inside a folder
    return folder


def test_predict_writes_masks_cutouts_composites_at_own_size(best_ckpt, photos, tmp_path):
    out = tmp_path / "out"
    cli(["predict", str(photos), "--ckpt", str(best_ckpt), "--out", str(out), "--background", "#ff0000", "--quiet"])
    for photo in sorted(p for p in photos.iterdir() if p.suffix != ".txt"):
        image = np.asarray(Image.open(photo).convert("RGB"))
        mask = np.asarray(Image.open(out / f"{photo.stem}_mask.png"))
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert 0.03 < (mask > 0).mean() < 0.7
        cut = np.asarray(Image.open(out / f"{photo.stem}_cutout.png"))
        # the cut-out's alpha is the model's probability: above half exactly where the mask is
        assert cut.shape == (*image.shape[:2], 4) and np.array_equal(cut[..., 3] > 127, mask > 0)
        assert ((cut[..., 3] > 0) & (cut[..., 3] < 255)).any()
        comp = np.asarray(Image.open(out / f"{photo.stem}_composite.jpg")).astype(int)
        outside = cut[..., 3] == 0
        assert outside.mean() > 0.2 and np.abs(comp[outside] - [255, 0, 0]).mean() < 12  # JPEG noise only


def test_submission_rows_match_masks(best_ckpt, photos, tmp_path):
    sub = tmp_path / "submission.csv"
    out = tmp_path / "out"
    summary = predict([photos], Predictor(ckpt=best_ckpt), out=out, submission=sub, progress=False, workers=0)
    table = read_rle_table(sub)
    assert summary.predicted == summary.submission_rows == len(table) == 4 and "other_size.png" in table
    for name, code in table.items():
        mask = np.asarray(Image.open(out / f"{Path(name).stem}_mask.png")) > 0
        np.testing.assert_array_equal(rle_decode(code, mask.shape), mask)


def test_outputs_written_on_threads_are_those_written_in_the_loop(best_ckpt, photos, tmp_path):
    """Writing beside the model (as on a GPU) gives the same files and the same submission, each row once."""
    import filecmp

    predictor = Predictor(ckpt=best_ckpt)
    for threads in (0, 3):
        out = tmp_path / f"out{threads}"
        summary = predict(
            [photos], predictor, out=out, submission=out / "s.csv", progress=False, workers=0, write_threads=threads
        )
        assert summary.predicted == summary.submission_rows == 4
    names = sorted(p.name for p in (tmp_path / "out0").iterdir() if p.is_file())
    assert names == sorted(p.name for p in (tmp_path / "out3").iterdir() if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "out0", tmp_path / "out3", names, shallow=False)
    assert mismatch == [] and errors == []
    with pytest.raises(CarsegError, match="--write-threads -1"):
        predict([photos], predictor, out=tmp_path / "bad", progress=False, workers=0, write_threads=-1)


def test_jpegs_decoded_where_the_model_runs_give_the_same_cutouts(best_ckpt, photos, tmp_path):
    """--decode device (nvJPEG on a GPU; here libjpeg-turbo in the predicting process) against the loader
    workers' decode: the same masks, the same checks of bad files, and a CMYK JPEG still read."""
    cmyk = next(photos.glob("*.jpg"))
    Image.open(cmyk).convert("CMYK").save(photos / "cmyk.jpg")
    good = next(photos.glob("*.jpg")).read_bytes()
    (photos / "cut.jpg").write_bytes(good[: len(good) // 2])
    predictor = Predictor(ckpt=best_ckpt)
    results = {}
    for decode in ("cpu", "device"):
        out = tmp_path / decode
        results[decode] = predict([photos], predictor, out=out, progress=False, workers=0, decode=decode)
    assert results["cpu"].predicted == results["device"].predicted == 5  # four photos and the CMYK one
    assert results["cpu"].failed == results["device"].failed == 1  # the truncated one, by the same check
    for mask in sorted((tmp_path / "cpu").glob("*_mask.png")):
        a, b = np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "device" / mask.name))
        assert (a == b).mean() > 0.999
    with pytest.raises(CarsegError, match="--decode gpu"):
        predict([photos], predictor, out=tmp_path / "x", progress=False, workers=0, decode="gpu")


def test_onnx_agrees_with_pytorch(best_ckpt, photos, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    cli(["export", "--ckpt", str(best_ckpt), "--out", str(onnx_path)])
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.jpg"))]
    torch_pred = Predictor(ckpt=best_ckpt, precision="32")
    onnx_pred = Predictor(onnx=onnx_path)
    assert onnx_pred.input_size == torch_pred.input_size == [64, 96]
    a, b = torch_pred.logits(images), onnx_pred.logits(images)
    assert (a - b).abs().max() < 1e-2
    agree = ((a > 0) == (b > 0)).float().mean().item()
    assert agree >= 0.999
    out = tmp_path / "onnx_out"
    cli(["predict", str(photos), "--onnx", str(onnx_path), "--out", str(out), "--quiet"])
    assert len(list(out.glob("*_mask.png"))) == 4


def test_background_helpers(tmp_path):
    image = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 1
    assert np.array_equal(cutout(image, mask)[..., 3], mask * 255)
    soft = cutout(image, mask, feather=2.0)[..., 3]
    assert 0 < soft[5, 9] < 128 < soft[10, 15]
    picture = tmp_path / "bg.png"
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8)[None, :, None], (10, 1, 3))).save(picture)
    bg = load_background(str(picture), (20, 30))
    assert bg.shape == (20, 30, 3)
    comp = composite(image, mask, load_background("blue", (20, 30)))
    assert tuple(comp[0, 0]) == (0, 0, 255) and tuple(comp[10, 15]) == (200, 200, 200)
    with pytest.raises(CarsegError, match="not a colour .*nor is it an image file"):
        load_background("not-a-colour", (2, 2))
    ramp = load_background("gradient:#000000:#ffffff", (11, 3))
    assert tuple(ramp[0, 0]) == (0, 0, 0) and tuple(ramp[-1, 2]) == (255, 255, 255)
    assert np.all(np.diff(ramp[:, 1, 0].astype(int)) > 0)
    with pytest.raises(CarsegError, match="gradient:<top colour>:<bottom colour>"):
        load_background("gradient:#000000", (2, 2))


def test_bad_inputs(best_ckpt, photos, tmp_path):
    predictor = Predictor(ckpt=best_ckpt)
    with pytest.raises(CarsegError, match="notes.txt: not a photo's name"):
        predict([photos / "notes.txt"], predictor, out=tmp_path / "o")
    with pytest.raises(CarsegError, match="no such file or folder"):
        predict([tmp_path / "missing"], predictor, out=tmp_path / "o")
    # A corrupt photo in the middle. By default it costs no other photo its outputs and is listed with the
    # reason; with on_error="stop" the error names it and the outputs before it stay.
    files = sorted(photos.glob("*.jpg"))
    files[1].write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "skip"
    summary = predict(files, predictor, out=out, batch_size=1, progress=False, workers=0)
    assert summary.failed == 1 and summary.predicted == len(files) - 1
    written = sorted(p.name for p in out.glob("*_mask.png"))
    assert written == sorted(f"{f.stem}_mask.png" for f in files if f != files[1])
    failures = (out / "failures.csv").read_text().splitlines()
    assert failures[0] == "path,reason" and len(failures) == 2 and files[1].name in failures[1]
    out = tmp_path / "stop"
    with pytest.raises(CarsegError, match=files[1].name):
        predict(files, predictor, out=out, batch_size=1, progress=False, on_error="stop", workers=0)
    assert (out / f"{files[0].stem}_mask.png").is_file() and not (out / f"{files[2].stem}_mask.png").exists()


def test_unreadable_folder(best_ckpt, photos, tmp_path, monkeypatch):
    import os

    scandir = os.scandir

    def denied(path="."):
        if isinstance(path, str | os.PathLike) and Path(path) == photos:
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(CarsegError, match="the folder cannot be read"):
        predict([photos], Predictor(ckpt=best_ckpt), out=tmp_path / "o")


def test_bad_checkpoints(best_ckpt, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(best_ckpt.read_bytes()[:1000])
    with pytest.raises(CarsegError, match="corrupt or not a checkpoint"):
        load_checkpoint(corrupt)
    ckpt = torch.load(best_ckpt, weights_only=False)
    ckpt["hyper_parameters"]["net"]["decoder_channels"] = [96, 48, 24, 12, 12]  # weights of another shape
    other = tmp_path / "other_arch.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(CarsegError, match="do not fit the architecture"):
        load_checkpoint(other)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden": 3}}, foreign)
    with pytest.raises(CarsegError, match="another model class"):
        load_checkpoint(foreign)
    result = _cli_subprocess(["predict", str(tmp_path), "--ckpt", str(corrupt), "--out", str(tmp_path / "x")])
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr


def _cli_subprocess(args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "carseg.cli", *args], capture_output=True, text=True)


def test_asking_for_a_missing_gpu_is_one_clear_error(best_ckpt, photos, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: asking for one is no error")
    args = ["predict", str(photos), "--ckpt", str(best_ckpt), "--out", str(tmp_path / "o"), "--accelerator", "gpu"]
    result = _cli_subprocess(args)
    assert result.returncode == 2 and "--accelerator gpu" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((1, 1000), (320, 480)),
        ((1000, 1), (320, 480)),
        ((50, 60), (320, 480)),
        ((900, 1600), (320, 480)),
        ((320, 480), (320, 480)),
    ],
)
def test_a_background_is_cropped_to_the_photos_shape_before_it_is_scaled(shape, size, monkeypatch):
    """Whatever the background's shape, the work is bounded by the background and the result: no
    intermediate larger than both."""
    import cv2

    from carseg.inference.background import fit_background

    largest = []
    real = cv2.resize

    def watched(src, dsize, *args, **kwargs):
        largest.append(dsize[0] * dsize[1])
        return real(src, dsize, *args, **kwargs)

    monkeypatch.setattr(cv2, "resize", watched)
    picture = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    fitted = fit_background(picture, size)
    assert fitted.shape == (*size, 3)
    assert max(largest, default=0) <= size[0] * size[1]


def test_the_alpha_is_above_half_exactly_where_the_mask_is_also_at_the_threshold():
    """A logit exactly at the threshold is background; its alpha must not round up to 128 of 255."""
    from carseg.inference.background import cutout
    from carseg.inference.predictor import edge_matte

    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    prob[4, 5:15] = 0.5  # background pixels exactly at the threshold
    prob[5, 5:15] = np.float32(0.5) + np.float32(1e-7)  # car pixels just above it
    alpha = edge_matte(mask, prob)
    written = cutout(np.zeros((20, 20, 3), np.uint8), mask, alpha=alpha)[..., 3]
    assert np.array_equal(written > 127, mask > 0) and np.array_equal(alpha > 0.5, mask > 0)


def test_the_review_queue_lists_every_photo_worst_first_and_copies_the_doubtful(best_ckpt, photos, tmp_path):
    import pandas as pd

    out, review = tmp_path / "out", tmp_path / "queue" / "review.csv"
    sub = tmp_path / "submission.csv"
    plain = tmp_path / "plain.csv"
    predictor = Predictor(ckpt=best_ckpt)
    predict([photos], predictor, submission=plain, progress=False, workers=0)
    summary = predict(
        [photos], predictor, out=out, submission=sub, progress=False, workers=0, review=review, review_below=2.0
    )
    table = pd.read_csv(review)
    assert summary.predicted == len(table) == 4 and table["quality"].is_monotonic_increasing  # worst first
    assert set(table["image"]) == {p.name for p in photos.iterdir() if p.suffix != ".txt"}
    assert table["quality"].between(0, 1).all() and (table["calibrated"] == 0).all()
    assert sub.read_text() == plain.read_text()  # the Kaggle submission is unchanged
    folder = review.parent / "review"  # under 2.0: every photo, with its cut-out and a contact sheet
    assert {p.name for p in folder.glob("*_cutout.png")} == {f"{Path(n).stem}_cutout.png" for n in table["image"]}
    assert (folder / "contact_sheet.png").is_file() and not list(review.parent.glob(".review.csv.*"))
    with pytest.raises(CarsegError, match="--review-below 0.5: give --review"):
        predict([photos], predictor, out=out, progress=False, workers=0, review_below=0.5)


def test_bf16_inference_on_a_cpu_without_bf16_units_warns(small_ckpt, monkeypatch, caplog):
    from carseg import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="carseg"):
        Predictor(ckpt=small_ckpt, precision="32")
        assert not [r for r in caplog.records if r.name == "carseg"]
        assert Predictor(ckpt=small_ckpt, precision="bf16").precision == "bf16"
    (record,) = [r for r in caplog.records if r.name == "carseg"]
    assert "precision=bf16" in record.getMessage() and "precision=auto" in record.getMessage()
