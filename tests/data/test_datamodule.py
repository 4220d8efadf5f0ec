import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from carseg.data.carvana import scan, split_by_car
from carseg.data.datamodule import CarvanaDataModule, CarvanaDataset
from carseg.errors import CarsegError
from tests.helpers import compose_cfg, tiny_overrides


def test_split_by_car_never_shares_a_car(tiny_data):
    records = scan(tiny_data)
    train, val = split_by_car(records, 0.34, seed=1)
    assert {r.car_id for r in train}.isdisjoint({r.car_id for r in val})
    assert len(train) + len(val) == len(records)
    assert len({r.car_id for r in val}) == 2
    again, _ = split_by_car(records, 0.34, seed=1)
    assert again == train
    other, _ = split_by_car(records, 0.34, seed=2)
    assert {r.car_id for r in other} != {r.car_id for r in train} or len(records) < 3


def test_explicit_val_cars(tiny_data):
    records = scan(tiny_data)
    car = records[0].car_id
    train, val = split_by_car(records, 0.5, seed=0, val_cars=[car])
    assert {r.car_id for r in val} == {car} and car not in {r.car_id for r in train}
    with pytest.raises(CarsegError, match="val_cars"):
        split_by_car(records, 0.5, seed=0, val_cars=["000000000000"])


def test_masks_from_gif_and_rle_agree(tiny_data):
    gif = CarvanaDataset(scan(tiny_data, "gif")[:5], (64, 96))
    rle = CarvanaDataset(scan(tiny_data, "rle")[:5], (64, 96))
    for i in range(5):
        assert torch.equal(gif[i]["mask"], rle[i]["mask"])


def test_datamodule_from_config(tiny_root, tmp_path):
    cfg = compose_cfg("train", tiny_overrides(tiny_root, tmp_path), tmp_path / "run")
    dm: CarvanaDataModule = instantiate(cfg.datamodule)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 64, 96)
    assert batch["mask"].dtype == torch.float32 and batch["mask"].shape == (8, 1, 64, 96)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    names = [type(t).__name__ for t in dm.train_set.pipeline.transforms]
    assert {"HorizontalFlip", "Affine", "RandomBrightnessContrast"} <= set(names)  # from the config
    assert len(dm.val_set.pipeline.transforms) == 0  # validation is not augmented


def test_augmentations_apply(tiny_data):
    import albumentations as A

    records = scan(tiny_data)[:1]
    plain = CarvanaDataset(records, (64, 96))[0]
    flipped = CarvanaDataset(records, (64, 96), [A.HorizontalFlip(p=1.0)])[0]
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))
    assert torch.equal(flipped["image"], plain["image"].flip(-1))


def test_bad_inputs_give_clear_errors(tiny_data, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    victim = sorted((bad / "train_masks").iterdir())[0]
    victim.unlink()
    with pytest.raises(CarsegError, match=victim.name):
        CarvanaDataModule(str(bad), image_size=[64, 96], mask_source="gif").setup("fit")
    corrupt = sorted((tiny_data / "train").iterdir())[1]
    (bad / "train" / corrupt.name).write_bytes(b"not a jpeg")
    records = [r for r in scan(tiny_data) if r.image.name == corrupt.name]
    records = [type(r)(r.car_id, r.angle, bad / "train" / corrupt.name, r.mask) for r in records]
    with pytest.raises(CarsegError, match=corrupt.name):
        CarvanaDataset(records, (64, 96))[0]
    with pytest.raises(CarsegError, match="val_fraction"):
        split_by_car(scan(tiny_data), 1.5, seed=0)
    with pytest.raises(CarsegError, match="image_size"):
        CarvanaDataModule(str(tiny_data), image_size=[64])


def test_reads_real_carvana_files(sample_full):
    records = scan(sample_full)
    assert len(records) == 128 and len({r.car_id for r in records}) == 8
    item = CarvanaDataset(records[:1], (320, 480))[0]
    assert item["image"].shape == (3, 320, 480)
    assert 0.1 < item["mask"].float().mean() < 0.6
    rle_item = CarvanaDataset(scan(sample_full, "rle")[:1], (320, 480))[0]
    assert torch.equal(item["mask"], rle_item["mask"])
    assert np.isfinite(item["image"].float().mean().item())


def test_cache_dir_keeps_the_data_folder_untouched(tiny_root, tmp_path):
    data = next(tiny_root.glob("synthetic_*"))
    before = sorted(p.name for p in data.iterdir())
    overrides = [*tiny_overrides(tiny_root, tmp_path), "datamodule.cache=true", f"datamodule.cache_dir={tmp_path}/c"]
    dm: CarvanaDataModule = instantiate(compose_cfg("train", overrides, tmp_path / "run").datamodule)
    dm.prepare_data()
    dm.setup("fit")
    assert sorted(p.name for p in data.iterdir()) == before  # nothing written beside the photos
    (cache,) = list((tmp_path / "c").iterdir())
    assert cache.name == "cache_64x96" and len(list((cache / "images").iterdir())) == len(scan(data))
    cached = dm.val_set[0]
    plain = CarvanaDataset(dm.val_set.records, (64, 96))[0]
    assert torch.equal(cached["mask"], plain["mask"]) and cached["image"].shape == plain["image"].shape
