"""Soft masks and progressive resizing (a training size per epoch)."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from carseg.build import build
from carseg.data.carvana import scan
from carseg.data.datamodule import CarvanaDataModule, CarvanaDataset
from carseg.data.io import resize_pair
from carseg.errors import CarsegError
from carseg.models.losses import CombinedLoss
from carseg.training.callbacks import EpochTimes
from tests.helpers import compose_cfg, tiny_overrides


def test_soft_mask_keeps_the_car_share_of_each_pixel():
    mask = np.zeros((4, 4), np.uint8)
    mask[:, :1] = 1  # left quarter: half of each 2x2 block of the first column
    image = np.zeros((4, 4, 3), np.uint8)
    _, hard = resize_pair(image, mask, (2, 2))
    _, soft = resize_pair(image, mask, (2, 2), soft=True)
    assert hard.tolist() == [[1, 0], [1, 0]]  # 0.5 counts as car
    assert soft.tolist() == [[128, 0], [128, 0]]
    _, same = resize_pair(image, mask, (4, 4), soft=True)
    assert set(np.unique(same)) == {0, 255}


def test_soft_dataset_and_cache_agree(tiny_data, tmp_path):
    from carseg.data.cache import build_cache

    records = scan(tiny_data)[:4]
    direct = CarvanaDataset(records, (40, 60), soft_masks=True)
    build_cache(tmp_path, (40, 60), records, progress=False, soft=True)
    cached = CarvanaDataset(records, (40, 60), cache_root=tmp_path, soft_masks=True)
    for i in range(4):
        m = direct[i]["mask"]
        assert m.min() >= 0 and m.max() <= 1
        assert torch.equal(m, cached[i]["mask"])
    fractional = direct[0]["mask"]
    assert ((fractional > 0) & (fractional < 1)).any(), "a shrunk edge should give partial pixels"


def test_lovasz_sees_soft_targets_thresholded():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    soft = torch.rand(2, 1, 8, 8)
    loss = CombinedLoss(bce=0, dice=0, lovasz=1)
    assert torch.allclose(loss(logits, soft), loss(logits, (soft >= 0.5).float()))
    both = CombinedLoss(bce=1, dice=0, lovasz=0)
    assert not torch.allclose(both(logits, soft), both(logits, (soft >= 0.5).float()))


def _datamodule(tiny_root, tmp_path, *extra):
    cfg = compose_cfg("train", [*tiny_overrides(tiny_root, tmp_path), *extra], tmp_path / "run")
    return build(cfg.datamodule, "datamodule")


def test_size_schedule_as_a_mapping():
    parse = CarvanaDataModule._parse_schedule
    assert parse({3: [64, 96], 0: (32, 48)}) == [(0, (32, 48)), (3, (64, 96))]
    assert parse(None) == []


def test_size_schedule_picks_the_size_of_each_epoch(tiny_root, tmp_path):
    dm: CarvanaDataModule = _datamodule(
        tiny_root,
        tmp_path,
        "datamodule.size_schedule=[{epoch:0,size:[32,48]},{epoch:2,size:[64,96]}]",
        "datamodule.cache=true",
    )
    assert [dm.train_size(e) for e in range(4)] == [(32, 48), (32, 48), (64, 96), (64, 96)]
    dm.prepare_data()
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape[-2:] == (32, 48)
    assert next(iter(dm.val_dataloader()))["image"].shape[-2:] == (64, 96)  # validation at image_size


@pytest.mark.parametrize(
    "schedule, match",
    [
        ("{2:[64,96]}", "epoch 0"),
        ("{0:[64,96,3]}", "not valid"),
        ("{0:[16,96]}", "at least 32"),
        ("{0:64}", "not valid"),
        ("[{time:0,size:[32,48]},{time:1.0,size:[64,96]}]", "0 to 1"),
        ("[{time:0.1,size:[32,48]}]", "time 0"),
        ("[{time:0,size:[32,48]},{epoch:2,size:[64,96]}]", "not both"),
    ],
)
def test_bad_size_schedule_names_the_key(tiny_root, tmp_path, schedule, match):
    with pytest.raises(CarsegError, match=match):
        _datamodule(tiny_root, tmp_path, f"datamodule.size_schedule={schedule}")


class _Sizes(pl.Callback):
    def __init__(self):
        self.seen: dict[int, set] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, set()).add(tuple(batch["image"].shape[-2:]))


@pytest.mark.slow
def test_training_follows_the_schedule(tiny_root, tmp_path):
    overrides = [
        "datamodule.size_schedule=[{epoch:0,size:[32,48]},{epoch:1,size:[64,96]}]",
        "datamodule.soft_masks=true",
    ]
    dm = _datamodule(tiny_root, tmp_path, *overrides)
    cfg = compose_cfg("train", [*tiny_overrides(tiny_root, tmp_path), "model.channels_last=false"], tmp_path / "r")
    module = build(cfg.model, "model", _recursive_=False)
    sizes = _Sizes()
    kwargs = dict(max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=False, enable_checkpointing=False)
    with pytest.raises(CarsegError, match="reload_dataloaders_every_n_epochs"):
        pl.Trainer(**kwargs, callbacks=[sizes], enable_progress_bar=False).fit(module, datamodule=dm)
    dm = _datamodule(tiny_root, tmp_path, *overrides)
    times = EpochTimes()
    trainer = pl.Trainer(
        **kwargs, callbacks=[sizes, times], enable_progress_bar=False, reload_dataloaders_every_n_epochs=1
    )
    sizes.seen.clear()
    trainer.fit(module, datamodule=dm)
    assert sizes.seen == {0: {(32, 48)}, 1: {(64, 96)}}
    assert torch.isfinite(trainer.callback_metrics["val/iou"])
    # each stage's wall time, by the size it trained at
    assert [(e["epoch"], e["size"], e["images"]) for e in times.epochs] == [(0, [32, 48], 16), (1, [64, 96], 16)]
    stages = times.stages()
    assert [s["size"] for s in stages] == ["32x48", "64x96"] and all(s["seconds"] > 0 for s in stages)
    assert sum(s["seconds"] for s in stages) == pytest.approx(sum(e["seconds"] for e in times.epochs), abs=0.2)


def test_a_time_schedule_follows_the_share_of_the_budget_spent(tiny_root, tmp_path):
    dm = _datamodule(tiny_root, tmp_path, "datamodule.size_schedule=[{time:0,size:[32,48]},{time:0.4,size:[64,96]}]")
    assert dm.schedule_by_time
    assert [dm.train_size(epoch, p) for epoch, p in [(0, 0.0), (5, 0.39), (1, 0.4), (2, 0.9)]] == [
        (32, 48),
        (32, 48),
        (64, 96),
        (64, 96),
    ]
    dm.time_progress = 0.5  # as the TimeBudget callback sets it at each epoch's end
    assert dm.train_size(0) == (64, 96)


def test_a_time_schedule_needs_the_budget(tiny_root, tmp_path):
    dm = _datamodule(tiny_root, tmp_path, "datamodule.size_schedule=[{time:0,size:[32,48]},{time:0.5,size:[64,96]}]")
    dm.trainer = pl.Trainer(logger=False, reload_dataloaders_every_n_epochs=1, enable_progress_bar=False)
    with pytest.raises(CarsegError, match="callbacks.time_budget.minutes"):
        dm.train_dataloader()
