"""`carseg data audit`: a mask with a mistake is the first suspect, judged out of fold where the run held
its car out."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from carseg.cli import main as cli
from carseg.data.carvana import scan, split_by_car
from carseg.evaluation.audit import densest_window

pytestmark = pytest.mark.slow


def test_a_wrong_mask_is_the_first_suspect(trained, tiny_data, tmp_path):
    run_dir, _ = trained
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("*.csv"))  # masks from the GIFs only
    val_cars = {r.car_id for r in split_by_car(scan(tiny_data), 0.34, seed=42)[1]}
    victim = [r for r in scan(data) if r.car_id in val_cars][5]
    mask = np.asarray(Image.open(victim.mask)).copy()
    mask[:, : mask.shape[1] // 3] = 0  # a third of the car left out of its mask
    gif = Image.frombytes("P", mask.shape[::-1], mask.astype(np.uint8).tobytes())
    gif.putpalette([0, 0, 0, 255, 255, 255])
    gif.save(victim.mask)
    out = tmp_path / "audit"
    cli(["data", "audit", str(data), "--ckpt", str(run_dir), "--out", str(out), "--top", "3", "--no-tta"])
    table = pd.read_csv(out / "audit.csv")
    assert len(table) == len(scan(data)) and table["suspect_pixels"].is_monotonic_decreasing
    first = table.iloc[0]
    assert first["image"] == victim.image.name and first["missing_in_mask"] > first["extra_in_mask"]
    assert set(table[table["out_of_fold"]]["car_id"]) == val_cars  # the run's validation cars, out of fold
    with Image.open(out / "audit_suspects.png") as im:
        assert im.size[0] > 600


def test_the_close_up_holds_the_disagreement():
    """The panel's close-up window lies inside the photo and holds the densest patch of suspect pixels."""
    suspect = np.zeros((320, 480), bool)
    suspect[5:9, 20:400] = True  # a long thin line: fewer pixels in any one window
    suspect[250:290, 430:470] = True  # a dense blob near the corner
    top, left, side = densest_window(suspect, 0.25)
    assert side == 80 and 0 <= top <= 320 - side and 0 <= left <= 480 - side
    assert suspect[top : top + side, left : left + side].sum() == 40 * 40
    assert densest_window(np.zeros((50, 60), bool))[2] == 10  # nothing suspect: still a window in the photo
