"""Real-layout reading: Kaggle zips, input checks, k-fold, val car files, cache, reduced decoding, download."""

import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carseg.data.cache import build_cache, is_cached
from carseg.data.carvana import read_car_list, scan, split_by_car
from carseg.data.checks import check_dataset, check_records
from carseg.data.datamodule import CarvanaDataModule, CarvanaDataset
from carseg.data.io import read_image
from carseg.errors import CarsegError
from tests.helpers import TINY_PAIRS


@pytest.fixture
def tiny_copy(tiny_data, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(tiny_data, out)
    return out


def _zip(folder: Path, target: Path, arcroot: str | None = None) -> None:
    with zipfile.ZipFile(target, "w") as zf:
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{arcroot or folder.name}/{f.name}")
        else:
            zf.write(folder, folder.name)


def test_kaggle_zips_are_extracted_once(tiny_data, tmp_path):
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    for name in ("train", "train_masks", "train_masks.csv", "metadata.csv"):
        _zip(tiny_data / name, kaggle / f"{name}.zip")
    dm = CarvanaDataModule(str(kaggle), image_size=(64, 96), num_workers=0, val_fraction=0.34)
    dm.prepare_data()
    assert (kaggle / "train").is_dir() and (kaggle / "train_masks.csv").is_file()
    stamp = (kaggle / "train").stat().st_mtime_ns
    dm.prepare_data()
    assert (kaggle / "train").stat().st_mtime_ns == stamp
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == TINY_PAIRS
    assert not list(kaggle.glob(".extract-*"))


def test_corrupt_zip_is_named(tmp_path):
    (tmp_path / "train.zip").write_bytes(b"PK not really")
    with pytest.raises(CarsegError, match="train.zip"):
        CarvanaDataModule(str(tmp_path), num_workers=0).prepare_data()


def _make_bad_files(root: Path) -> dict[str, Path]:
    """Damage copies of the tiny set in every way the loader must catch."""
    images = sorted((root / "train").glob("*.jpg"))
    rgb = np.asarray(Image.open(images[0]))
    bad = {}
    Image.fromarray(rgb).convert("L").save(images[1])
    bad["L"] = images[1]
    Image.fromarray(rgb).convert("CMYK").save(images[2])
    bad["CMYK"] = images[2]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(images[3], exif=exif)
    bad["exif"] = images[3]
    data = images[4].read_bytes()
    images[4].write_bytes(data[: len(data) // 2])
    bad["truncated"] = images[4]
    (root / "train_masks" / f"{images[5].stem}_mask.gif").unlink()
    bad["missing"] = root / "train_masks" / f"{images[5].stem}_mask.gif"
    small = Image.open(root / "train_masks" / f"{images[6].stem}_mask.gif").resize((50, 30))
    small.save(root / "train_masks" / f"{images[6].stem}_mask.gif")
    bad["size"] = root / "train_masks" / f"{images[6].stem}_mask.gif"
    for name, mode in (("RGBA", "RGBA"), ("P", "P"), ("16bit", "I;16")):
        path = root / "train" / f"{images[7].stem[:12]}_{ {'RGBA': 14, 'P': 15, '16bit': 16}[name] }.png"
        src = root / "train" / f"{path.stem}.jpg"
        arr = np.asarray(Image.open(src))
        im = (
            Image.fromarray(arr).convert(mode)
            if mode != "I;16"
            else Image.fromarray(arr[..., 0].astype(np.uint16) * 256)
        )
        src.unlink()
        im.save(path)
        bad[name] = path
    return bad


def test_bad_inputs_listed_in_one_error_or_skipped(tiny_copy):
    bad = _make_bad_files(tiny_copy)
    problems = check_records(scan(tiny_copy))
    flagged = {p.path for p in problems}
    for kind, path in bad.items():
        assert path in flagged, f"{kind} not caught: {path}"
    dm = CarvanaDataModule(str(tiny_copy), image_size=(64, 96), num_workers=0, val_fraction=0.34, mask_source="gif")
    with pytest.raises(CarsegError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert all(path.name in message for path in bad.values()) and "skip_bad=true" in message
    dm = CarvanaDataModule(
        str(tiny_copy), image_size=(64, 96), num_workers=0, val_fraction=0.34, skip_bad=True, mask_source="gif"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    assert any(f"skipping {len(flagged)} bad input file(s)" in str(w.message) for w in caught)
    used = {r.image for r in dm.train_set.records + dm.val_set.records}
    assert used.isdisjoint(flagged) and len(used) == TINY_PAIRS - len(bad)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 64, 96)


@pytest.mark.slow
def test_data_check_reports_gif_rle_mismatch_by_file(tiny_copy):
    victim = sorted((tiny_copy / "train_masks").iterdir())[3]
    mask = np.asarray(Image.open(victim)).copy()
    mask[:5, :5] = 1 - mask[:5, :5]
    gif = Image.frombytes("P", mask.shape[::-1], mask.tobytes())
    gif.putpalette([0, 0, 0, 255, 255, 255])
    gif.save(victim)
    compared, problems = check_dataset(tiny_copy, scan(tiny_copy), progress=False)
    assert compared == TINY_PAIRS
    assert [str(p.path) for p in problems] == [str(victim)] and "25 pixels" in problems[0].reason
    result = subprocess.run(
        [sys.executable, "-m", "carseg.cli", "data", "check", str(tiny_copy), "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 2 and victim.name in result.stdout and "Traceback" not in result.stderr


def test_data_check_passes_on_synthetic(tiny_data):
    compared, problems = check_dataset(tiny_data, scan(tiny_data), progress=False)
    assert compared == TINY_PAIRS and problems == []


@pytest.mark.parametrize("folder", ["sample_full", "train_480x320"])
def test_data_check_passes_on_real_files(folder):
    from tests.helpers import SHARED_CARVANA

    root = SHARED_CARVANA / folder
    if not root.is_dir():
        pytest.skip(f"real Carvana files not found at {root}")
    records = scan(root)
    if folder == "train_480x320":
        problems = check_records(records)
    else:
        compared, problems = check_dataset(root, records, progress=False)
        assert compared == 128
    assert problems == []
    assert len(records) == {"sample_full": 128, "train_480x320": 4320}[folder]


def test_group_k_fold_covers_every_car_once(tiny_data):
    records = scan(tiny_data)
    cars = {r.car_id for r in records}
    seen = []
    for fold in range(3):
        train, val = split_by_car(records, 0.2, seed=5, fold=fold, num_folds=3)
        val_cars = {r.car_id for r in val}
        assert val_cars.isdisjoint({r.car_id for r in train}) and len(val_cars) == 2
        seen += sorted(val_cars)
    assert sorted(seen) == sorted(cars)
    assert split_by_car(records, 0.2, seed=5, fold=1, num_folds=3) == split_by_car(records, 0.2, 5, None, 1, 3)
    with pytest.raises(CarsegError, match="datamodule.fold"):
        split_by_car(records, 0.2, seed=5, fold=3, num_folds=3)
    with pytest.raises(CarsegError, match="datamodule.num_folds"):
        split_by_car(records, 0.2, seed=5, fold=0, num_folds=7)


def test_val_cars_file(tiny_data, tmp_path):
    cars = sorted({r.car_id for r in scan(tiny_data)})
    listing = tmp_path / "val.txt"
    listing.write_text(f"# validation cars\n{cars[0]}\n{cars[2]}_01.jpg\n")
    assert read_car_list(listing) == [cars[0], cars[2]]
    table = tmp_path / "val.csv"
    table.write_text(f"id,make\n{cars[1]},X\n")
    assert read_car_list(table) == [cars[1]]
    dm = CarvanaDataModule(str(tiny_data), image_size=(64, 96), num_workers=0, val_cars_file=str(listing))
    dm.setup("fit")
    assert {r.car_id for r in dm.val_set.records} == {cars[0], cars[2]}


def test_cache_gives_the_same_pairs(tiny_copy):
    records = scan(tiny_copy)[:6]
    size = (48, 72)
    assert not is_cached(tiny_copy, size, records)
    build_cache(tiny_copy, size, records, progress=False)
    assert is_cached(tiny_copy, size, records)
    direct, cached = CarvanaDataset(records, size), CarvanaDataset(records, size, cache_root=tiny_copy)
    for i in range(len(records)):
        assert torch.equal(direct[i]["image"], cached[i]["image"]) and torch.equal(direct[i]["mask"], cached[i]["mask"])


def test_cache_command(tiny_copy):
    from carseg.cli import main

    main(["data", "cache", str(tiny_copy), "--size", "32", "48"])
    assert len(list((tiny_copy / "cache_32x48" / "images").glob("*.npy"))) == TINY_PAIRS


def test_reduced_decode_matches_full_decode(tiny_data, tmp_path):
    import cv2

    src = sorted((tiny_data / "train").glob("*.jpg"))[0]
    big = tmp_path / "big.jpg"
    Image.open(src).resize((576, 384), Image.LANCZOS).save(big, quality=95)
    reduced = read_image(big, (96, 144))  # 1/4 of the size: decoded at 1/4 scale inside the decoder
    assert reduced.shape == (96, 144, 3)
    full = cv2.resize(read_image(big), (144, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 3
    assert read_image(big, (200, 300)).shape == (384, 576, 3)  # less than 1/2: full decode


def test_download_without_credentials_says_what_to_do(tmp_path, monkeypatch):
    from carseg.data.download import download

    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(CarsegError, match=r"kaggle\.json.*train\.zip"):
        download(tmp_path / "out")
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    with pytest.raises(CarsegError, match=r"pip install 'carseg\[kaggle\]'.*by hand"):
        download(tmp_path / "out")


@pytest.mark.slow
def test_bench_data_smoke(tiny_data, tmp_path):
    import json

    from carseg.bench.data import run

    out = tmp_path / "data.json"
    run(tiny_data, size=(48, 72), images=16, workers=(0,), models=("unet_resnet18_light",), out=out)
    result = json.loads(out.read_text())
    assert [r["loader"] for r in result["loaders"]][-1] == "cache"
    assert all(r["0 workers img/s"] > 0 for r in result["loaders"])
    assert result["train_steps"][0]["train step img/s"] > 0 and result["rle_1918x1280"]["decode_ms"] > 0
    assert not list(tiny_data.glob("cache_*"))  # the bench leaves the data folder as it was
