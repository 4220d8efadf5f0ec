"""On a CUDA GPU (skipped, saying so, where none is visible): `trainer.gpus=1` trains there; the predictor
agrees with the CPU."""

import gzip
import shutil

import numpy as np
import pytest
import torch

from carseg import runs
from carseg.data.io import read_image
from carseg.inference.predictor import Predictor
from carseg.training.devices import resolve_trainer_args
from carseg.training.run import train
from tests.helpers import ROOT, compose_cfg, tiny_overrides

pytestmark = pytest.mark.gpu


@pytest.mark.slow
def test_gpus_1_trains_on_the_gpu_in_bf16(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = resolve_trainer_args({"gpus": 1, "precision": "auto", "strategy": "auto"})
    assert args["accelerator"] == "gpu" and args["devices"] == 1 and args["precision"] in ("bf16-mixed", "16-mixed")
    overrides = [*tiny_overrides(tiny_root, tmp_path), "trainer.gpus=1", "trainer.max_epochs=2", "logger=csv"]
    train(compose_cfg("train", overrides, tmp_path / "run"))
    summary = runs.read_summary(tmp_path / "run")
    assert summary["global_step"] > 0 and summary["best"] > 0.5


def test_predictor_on_cuda_agrees_with_cpu(tiny_data, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    with gzip.open(ROOT / "tests/fixtures/legacy_unet_mnv3s_64x96.ckpt.gz") as src, open(ckpt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    images = [read_image(p) for p in sorted((tiny_data / "train").glob("*.jpg"))[:4]]
    cpu = Predictor(ckpt=ckpt, device="cpu", precision="32").masks(images)
    cuda = Predictor(ckpt=ckpt, device="cuda", precision="32").masks(images)
    assert torch.cuda.is_available() and float(np.mean(cpu == cuda)) >= 0.999
