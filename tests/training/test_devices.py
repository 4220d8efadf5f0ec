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


@pytest.mark.parametrize(
    ("gpus", "devices"),
    [(2, 2), ("2", 2), (-1, 4), ("-1", 4), ("0,1", [0, 1]), ("1,3", [1, 3]), ("3,", [3]), ([0, 1], [0, 1])],
)
def test_gpus_takes_what_lightning_1_users_type(monkeypatch, gpus, devices):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    args = resolve_trainer_args({"gpus": gpus, "strategy": "auto"})
    assert args["accelerator"] == "gpu" and args["devices"] == devices
    assert args["strategy"] == ("ddp" if (len(devices) if isinstance(devices, list) else devices) > 1 else "auto")


@pytest.mark.parametrize("gpus", ["abc", "", "1.5", 1.5, True, -2, "-2", [0, "x"], [], [0, 0], [-1], {"a": 1}, "0,,x"])
def test_anything_else_is_one_line_naming_the_key_and_the_forms(gpus):
    with pytest.raises(CarsegError) as error:
        resolve_trainer_args({"gpus": gpus})
    text = str(error.value)
    assert text.startswith("trainer.gpus=") and "\n" not in text
    assert all(form in text for form in ("trainer.gpus=2", "-1", "0 for the CPU", "0,1", "trainer.gpus=[0,1]"))


@pytest.mark.parametrize("gpus", [1, "1", -1 + 3, "0,1", [0], [1, 2]])
def test_without_a_gpu_every_gpu_form_is_the_count_error(monkeypatch, gpus):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(CarsegError, match=r"asks for \d GPU\(s\) but 0 are visible.*trainer=cpu"):
        resolve_trainer_args({"gpus": gpus})


def test_ids_beyond_the_visible_gpus_are_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(CarsegError, match=r"names GPU id\(s\) \[5\] but the visible GPUs are 0..1"):
        resolve_trainer_args({"gpus": [0, 5]})


def test_gpus_minus_one_without_a_gpu_is_an_error_and_zero_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for gpus in (-1, "-1"):
        with pytest.raises(CarsegError, match="trainer.gpus=-1 asks for all visible GPUs but none is visible"):
            resolve_trainer_args({"gpus": gpus})
    assert resolve_trainer_args({"gpus": "0", "precision": "32-true"})["accelerator"] == "cpu"


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_on_a_cpu_without_bf16_units_warns_with_the_fix(monkeypatch, caplog, precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="carseg"):
        assert resolve_trainer_args({"precision": precision, "accelerator": "cpu"})["precision"] == precision
    (record,) = [r for r in caplog.records if r.name == "carseg"]
    message = record.getMessage()
    assert f"trainer.precision={precision}" in message and "trainer.precision=32-true" in message


@pytest.mark.parametrize(("precision", "native"), [("bf16-mixed", True), ("32-true", False), ("auto", False)])
def test_no_bf16_warning_where_bf16_is_native_or_not_asked_for(monkeypatch, caplog, precision, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="carseg"):
        resolve_trainer_args({"precision": precision, "accelerator": "cpu"})
    assert not [r for r in caplog.records if r.name == "carseg"]
