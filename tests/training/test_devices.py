import pytest
import torch

from carseg import hardware
from carseg.errors import CarsegError
from carseg.training.devices import resolve_trainer_args


def test_gpus_alias_means_gpu_ddp(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    args = resolve_trainer_args({"gpus": 2, "strategy": "auto", "precision": "auto", "accelerator": "auto"})
    assert args["accelerator"] == "gpu" and args["devices"] == 2 and args["strategy"] == "ddp"
    assert args["precision"] == "bf16-mixed" and "gpus" not in args
    one = resolve_trainer_args({"gpus": 1, "strategy": "auto"})
    assert one["devices"] == 1 and one["strategy"] == "auto"
    ids = resolve_trainer_args({"gpus": [0, 3], "strategy": "auto"})
    assert ids["devices"] == [0, 3] and ids["strategy"] == "ddp"
    assert resolve_trainer_args({"gpus": -1})["devices"] == 4


def test_too_many_gpus_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CarsegError, match=r"trainer.gpus=2 asks for 2 GPU\(s\) but 1 is visible.*trainer=cpu"):
        resolve_trainer_args({"gpus": 2})


def test_gpus_zero_means_cpu():
    args = resolve_trainer_args({"gpus": 0, "accelerator": "auto"})
    assert args["accelerator"] == "cpu"


def test_precision_auto_follows_cpu_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert resolve_trainer_args({"precision": "auto", "accelerator": "cpu"})["precision"] == "bf16-mixed"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert resolve_trainer_args({"precision": "auto", "accelerator": "cpu"})["precision"] == "32-true"
    assert resolve_trainer_args({"precision": "32-true"})["precision"] == "32-true"
