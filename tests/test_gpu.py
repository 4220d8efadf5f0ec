"""On a CUDA GPU (skipped, saying so, where none is visible; `make device-check` runs them there): the forms of
`trainer.gpus`, full-size bf16 channels-last training, DDP and torch.compile on one GPU, and the predictor on
CUDA against the CPU."""

import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from carseg import runs
from carseg.bench.measure import build_module
from carseg.data.carvana import scan
from carseg.data.datamodule import CarvanaDataset
from carseg.data.io import read_image
from carseg.errors import CarsegError
from carseg.inference.predictor import Predictor
from carseg.training.devices import resolve_trainer_args
from carseg.training.run import train
from tests.helpers import compose_cfg, tiny_overrides

pytestmark = pytest.mark.gpu
FULL = (1280, 1918)


@pytest.mark.parametrize(("gpus", "devices"), [(1, 1), ("1", 1), (-1, None), ("0,", [0]), ([0], [0])])
def test_gpu_forms_resolve_to_the_gpu(gpus, devices):
    args = resolve_trainer_args({"gpus": gpus, "precision": "auto", "strategy": "auto"})
    assert args["accelerator"] == "gpu" and args["strategy"] == "auto"
    assert args["devices"] == (torch.cuda.device_count() if devices is None else devices)
    assert args["precision"] == "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def test_gpus_beyond_the_machine_is_the_clear_error():
    visible = torch.cuda.device_count()
    with pytest.raises(CarsegError, match=rf"asks for {visible + 1} GPU\(s\) but {visible} (is|are) visible"):
        resolve_trainer_args({"gpus": visible + 1})


@pytest.mark.slow
def test_gpus_1_trains_on_the_gpu_in_bf16(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [*tiny_overrides(tiny_root, tmp_path), "trainer.gpus=1", "trainer.max_epochs=2", "logger=csv"]
    train(compose_cfg("train", overrides, tmp_path / "run"))
    summary = runs.read_summary(tmp_path / "run")
    assert summary["global_step"] > 0 and summary["best"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["trainer.strategy=ddp"], ["model.compile=true"]], ids=["ddp", "compile"])
def test_one_gpu_trains_with_ddp_and_with_compile(tiny_root, tmp_path, monkeypatch, extra):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [*tiny_overrides(tiny_root, tmp_path), "trainer.gpus=1", "trainer.max_epochs=2", "logger=csv", *extra]
    train(compose_cfg("train", overrides, tmp_path / "run"))
    summary = runs.read_summary(tmp_path / "run")
    assert summary["global_step"] > 0 and summary["best"] > 0.3


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.devices: set[str] = set()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, *args) -> None:
        self.losses.append(float(outputs["loss"]))
        self.devices.add(next(module.parameters()).device.type)


@pytest.mark.slow
def test_full_size_bf16_channels_last_steps_reduce_the_loss(sample_full):
    """U-Net ResNet-34 on real 1918x1280 photos (padded to 1920), bf16-mixed, channels-last: the loss falls."""
    torch.manual_seed(0)
    module = build_module("unet_resnet34", ["model.channels_last=true", "model.pad_always=true"])
    data = CarvanaDataset(scan(sample_full, "auto")[:2], FULL)
    losses = _Losses()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[losses],
    )
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=2))
    assert losses.devices == {"cuda"} and len(losses.losses) == 10
    assert all(np.isfinite(losses.losses)) and np.mean(losses.losses[-3:]) < 0.8 * losses.losses[0]


@pytest.fixture
def legacy_ckpt(small_ckpt):
    return small_ckpt


def test_predictor_on_cuda_agrees_with_cpu(tiny_data, legacy_ckpt):
    images = [read_image(p) for p in sorted((tiny_data / "train").glob("*.jpg"))[:4]]
    cpu = Predictor(ckpt=legacy_ckpt, device="cpu", precision="32").masks(images)
    cuda = Predictor(ckpt=legacy_ckpt, device="cuda", precision="32", compile="off").masks(images)
    assert float(np.mean(cpu == cuda)) >= 0.999


@pytest.mark.parametrize("precision", ["32", "auto"])
def test_predictor_on_cuda_agrees_with_cpu_on_full_size_photos(sample_full, legacy_ckpt, precision):
    """At native 1918x1280 on real photos: CUDA (fp32 with TF32 convolutions, or bf16 with precision auto)
    against CPU fp32 on at least 99.9% of pixels. The model is CARSEG_TRAINED_CKPT where set (the device
    check's short full-size run, at full size), else the small fixture model (at the size it was trained at)."""
    ckpt = os.environ.get("CARSEG_TRAINED_CKPT") or legacy_ckpt
    size = "train" if ckpt == legacy_ckpt else None
    images = [read_image(p) for p in sorted((sample_full / "train").glob("*.jpg"))[:3]]
    assert images[0].shape[:2] == FULL
    cpu = Predictor(ckpt=ckpt, device="cpu", precision="32", input_size=size).masks(images)
    cuda = Predictor(ckpt=ckpt, device="cuda", precision=precision, input_size=size, compile="off").masks(images)
    agreement = float(np.mean(cpu == cuda))
    print(f"{ckpt}: CUDA precision {precision} agrees with CPU fp32 on {agreement:.5%} of pixels")
    assert 0.01 < cpu.mean() < 0.99 and agreement >= 0.999


def test_the_gpu_default_compiles_and_agrees_with_eager(sample_full, legacy_ckpt):
    """Predictor's default on a GPU (bf16, channels-last, torch.compile) against eager bf16, batched."""
    images = [read_image(p) for p in sorted((sample_full / "train").glob("*.jpg"))[:4]]
    default = Predictor(ckpt=legacy_ckpt, device="cuda")
    assert default.module.net.__class__.__name__ == "EagerFallback"
    eager = Predictor(ckpt=legacy_ckpt, device="cuda", compile="off").masks(images)
    compiled = default.masks(images)
    assert default.module.net.compiled is not None  # it compiled, it did not fall back
    assert float(np.mean(compiled == eager)) >= 0.999


def test_jpegs_decoded_on_the_gpu_match_the_cpu_decoder(sample_full):
    from carseg.inference.photos import PhotoDataset, decode_jpegs

    paths = sorted((sample_full / "train").glob("*.jpg"))[:4]
    items = [PhotoDataset(paths, range(4), raw_jpeg=True)[i] for i in range(4)]
    decode_jpegs(items, "cuda")
    for item, path in zip(items, paths, strict=True):
        assert item["error"] is None and item["image"].shape == (*FULL, 3)
        difference = np.abs(item["image"].astype(int) - read_image(path).astype(int))
        assert difference.mean() < 1.0  # nvJPEG's IDCT against libjpeg-turbo's: rounding only
