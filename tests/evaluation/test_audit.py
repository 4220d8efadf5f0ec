"""`carseg data audit`: a mask with a mistake is the first suspect, judged out of fold where the run held
its car out."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from carseg.cli import main as cli
from carseg.data.carvana import scan, split_by_car

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
