import csv
import hashlib
import re

import numpy as np
import pytest
from PIL import Image

from carseg.data.carvana import read_rle_table
from carseg.data.rle import rle_decode
from carseg.data.synthetic import NUM_ANGLES, SynthSpec, car_ids, render_view, write_synthetic
from carseg.errors import CarsegError
from tests.helpers import TINY


def test_layout_is_carvana(tiny_data):
    images = sorted((tiny_data / "train").iterdir())
    assert len(images) == TINY["num_cars"] * NUM_ANGLES
    names = [p.name for p in images]
    assert all(re.fullmatch(r"[0-9a-f]{12}_(0[1-9]|1[0-6])\.jpg", n) for n in names)
    cars = {n[:12] for n in names}
    assert len(cars) == TINY["num_cars"]
    for car in cars:
        assert sorted(n[13:15] for n in names if n.startswith(car)) == [f"{k:02d}" for k in range(1, 17)]
    table = read_rle_table(tiny_data / "train_masks.csv")
    assert set(table) == set(names)
    with open(tiny_data / "metadata.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["id"] for r in rows} == cars
    assert set(rows[0]) == {"id", "year", "make", "model", "trim1", "trim2"}


def test_masks_are_binary_gifs_that_match_the_csv(tiny_data):
    table = read_rle_table(tiny_data / "train_masks.csv")
    for image in sorted((tiny_data / "train").iterdir())[:20]:
        gif = Image.open(tiny_data / "train_masks" / f"{image.stem}_mask.gif")
        assert gif.format == "GIF" and gif.mode == "P"
        mask = np.asarray(gif)
        assert set(np.unique(mask)) <= {0, 1}
        assert mask.shape == (TINY["height"], TINY["width"]) == Image.open(image).size[::-1]
        np.testing.assert_array_equal(rle_decode(table[image.name], mask.shape), mask)
        assert 0.03 < mask.mean() < 0.6  # a car, not empty, not everything


def test_deterministic_by_seed(tmp_path):
    spec = SynthSpec(num_cars=2, width=96, height=64, seed=3)

    def digest(path):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((path / "train_masks").iterdir()))).hexdigest()

    a = digest(write_synthetic(tmp_path / "a", spec, progress=False))
    b = digest(write_synthetic(tmp_path / "b", spec, progress=False))
    c = digest(write_synthetic(tmp_path / "c", SynthSpec(num_cars=2, width=96, height=64, seed=4), progress=False))
    assert a == b != c


def test_car_keeps_shape_and_colour_across_views():
    (_, params), *_ = car_ids(SynthSpec(num_cars=1, seed=0))
    rng = np.random.default_rng(0)
    colours, areas = [], []
    for k in range(NUM_ANGLES):
        image, mask = render_view(params, k, (240, 160), rng)
        colours.append(np.median(image[mask > 0], axis=0))
        areas.append(mask.sum())
    # Side views (4 and 12) show more car than front/back views (0 and 8); the views are mirror pairs.
    assert areas[4] > 1.3 * areas[0] and areas[12] > 1.3 * areas[8]
    assert abs(areas[4] - areas[12]) / areas[4] < 0.1
    spread = np.ptp(np.array(colours), axis=0).max()
    assert spread < 90, "the car's colour should stay recognisable across views"


def test_existing_other_folder_is_not_overwritten(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "precious.txt").write_text("keep")
    with pytest.raises(CarsegError, match="remove it or point datamodule.data_dir"):
        write_synthetic(tmp_path / "x", SynthSpec(num_cars=1, width=64, height=48), progress=False)
    assert (tmp_path / "x" / "precious.txt").read_text() == "keep"


def test_cli_synth(tmp_path):
    from carseg.cli import main

    main(["data", "synth", str(tmp_path / "s"), "--num-cars", "1", "--width", "96", "--height", "64"])
    assert len(list((tmp_path / "s" / "train").glob("*.jpg"))) == NUM_ANGLES
