"""Every model and trainer config composes and instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from carseg.models.module import SegmentationModule
from carseg.training.devices import resolve_trainer_args
from tests.helpers import CONF, compose_cfg, tiny_overrides

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))


def test_expected_options_exist():
    assert {"unet_resnet34", "deeplabv3plus_resnet50", "fpn_resnet34", "unet_resnet18_light"} <= set(MODELS)
    assert {"default", "cpu", "gpu", "ddp", "ddp_cpu"} <= set(TRAINERS)


@pytest.mark.parametrize("model", MODELS)
def test_model_configs_instantiate(model, tmp_path: Path):
    cfg = compose_cfg("train", [f"model={model}", f"paths.root_dir={tmp_path}"], tmp_path / "run")
    module = instantiate(cfg.model, _recursive_=False)
    assert isinstance(module, SegmentationModule)
    with torch.no_grad():
        assert module.eval()(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_configs_compose(trainer, tmp_path: Path):
    cfg = compose_cfg("train", [f"trainer={trainer}", f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    args = resolve_trainer_args(dict(cfg.trainer))
    assert "gpus" not in args and args["precision"] != "auto"
    if args["accelerator"] in ("cpu", "auto"):
        built = instantiate(args, logger=False, enable_progress_bar=False)
        assert isinstance(built, pl.Trainer)
        if trainer == "ddp_cpu":
            assert built.num_devices == 2 and type(built.strategy).__name__ == "DDPStrategy"


@pytest.mark.parametrize("option", ["early_stopping", "none"])
def test_callback_and_logger_options(option, tmp_path: Path):
    cfg = compose_cfg("train", [f"callbacks={option}", f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert ("early_stopping" in cfg.callbacks) == (option == "early_stopping")
    for logger in ("wandb", "csv", "tensorboard", "none"):
        cfg = compose_cfg("train", [f"logger={logger}", f"paths.root_dir={tmp_path}"], tmp_path / "run")
        for conf in cfg.logger.values() if cfg.logger else []:
            assert "_target_" in conf


def test_experiment_and_search_compose(tiny_root, tmp_path: Path):
    cfg = compose_cfg("train", ["experiment=example", *tiny_overrides(tiny_root, tmp_path)], tmp_path / "run")
    assert cfg.model.net.arch == "FPN" and cfg.trainer.max_epochs == 20
    cfg = compose_cfg("train", ["hparams_search=lr_sweep", f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert cfg.model.optimizer.lr > 0


def test_evaluate_config_composes(tmp_path: Path):
    cfg = compose_cfg("evaluate", [f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert cfg.ckpt_path is None and "datamodule" in cfg
