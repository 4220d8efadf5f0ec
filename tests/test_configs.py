"""Every model and trainer config composes and instantiates."""

import re
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
    assert (cfg.model.net.arch, cfg.model.net.encoder_name) == ("FPN", "resnet34")
    assert (cfg.trainer.max_epochs, cfg.seed, cfg.model.optimizer.lr, cfg.datamodule.batch_size) == (20, 7, 5e-4, 8)
    cfg = compose_cfg("train", ["hparams_search=lr_sweep", f"paths.root_dir={tmp_path}"], None, keep_hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # a sweep by itself, without -m
    params = cfg.hydra.sweeper.params
    assert params["model.optimizer.lr"] == "3.0e-4,1.0e-3,3.0e-3" and params["model.optimizer.weight_decay"]


def test_default_recipe_values(tmp_path: Path):
    cfg = compose_cfg("train", [f"paths.root_dir={tmp_path}"], tmp_path / "run")
    net = cfg.model.net
    assert (net.arch, net.encoder_name, net.encoder_weights) == ("Unet", "tu-regnetx_002", None)
    assert list(net.decoder_channels) == [64, 32, 16, 16, 8] and cfg.model.optimizer.lr == 2e-3
    assert cfg.model.loss.edge_weight == 3.0
    assert list(cfg.datamodule.image_size) == [160, 240] and cfg.datamodule.synthetic.num_cars == 48
    assert (cfg.datamodule.synthetic.width, cfg.datamodule.synthetic.height) == (240, 160)  # native: no resize
    assert (cfg.optimized_metric, cfg.optimized_mode) == ("val/iou", "max")
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/iou", "max")
    assert cfg.trainer.max_epochs == 5 and cfg.trainer.precision == "auto"
    for model in ("unet_resnet34", "fpn_resnet34"):  # the light models' learning rates stay their own
        assert compose_cfg("train", [f"model={model}", f"paths.root_dir={tmp_path}"]).model.optimizer.lr == 1e-3


def test_the_shared_model_base_is_not_a_model(tmp_path: Path):
    from carseg.build import build
    from carseg.errors import CarsegError

    cfg = compose_cfg("train", ["model=_segmentation", f"paths.root_dir={tmp_path}"], tmp_path / "run")
    with pytest.raises(CarsegError, match=r"model.net.arch, model.net.encoder_name not set"):
        build(cfg.model, "model", _recursive_=False)


def test_the_validation_cars_are_written_once():
    experiments = (CONF / "experiment").glob("carvana_*.yaml")
    car_id = re.compile(r"\b[0-9a-f]{12}\b")
    texts = [p.read_text() for p in experiments]
    assert texts and not any(car_id.search(t) for t in texts)
    listed = car_id.findall((CONF / "datamodule" / "val_cars" / "sample_full.yaml").read_text())
    assert len(listed) == len(set(listed)) == 8
    for experiment in ("carvana_cpu", "carvana_gpu"):
        cfg = compose_cfg("train", [f"experiment={experiment}", "paths.root_dir=/tmp/x"])
        assert list(cfg.datamodule.val_cars) == listed


def test_carvana_cpu_leaves_the_refiners_cars_out_of_stage_1(tmp_path: Path):
    """The recipe leaves the refiner's cars (train_full_32) out of stage 1: the refiner and the quality
    calibration then see the stage-1 model's errors on unseen cars."""
    from carseg.build import build
    from carseg.data.carvana import scan
    from tests.helpers import SHARED_CARVANA

    cfg = compose_cfg("train", ["experiment=carvana_cpu", f"paths.root_dir={tmp_path}"], tmp_path / "b")
    assert Path(cfg.datamodule.exclude_cars_file).parent == Path(cfg.refiner.data.data_dir)
    if not (SHARED_CARVANA / "train_full_32" / "cars.txt").is_file():
        pytest.skip(f"real Carvana data not found at {SHARED_CARVANA} (see the project README: real data tests)")
    overrides = [
        "experiment=carvana_cpu",
        f"paths.root_dir={tmp_path}",
        f"datamodule.data_dir={SHARED_CARVANA / 'train_480x320'}",
        f"datamodule.exclude_cars_file={SHARED_CARVANA / 'train_full_32' / 'cars.txt'}",
        "datamodule.cache=false",
        "datamodule.num_workers=0",
    ]
    dm = build(compose_cfg("train", overrides, tmp_path / "run").datamodule, "datamodule")
    dm.setup("fit")
    refiner_cars = {r.car_id for r in scan(SHARED_CARVANA / "train_full_32")}
    trained = {r.car_id for r in dm.train_set.records}
    assert len(refiner_cars) == 32 and trained.isdisjoint(refiner_cars)
    assert len(trained) == len({r.car_id for r in scan(SHARED_CARVANA / "train_480x320")}) - 32 - 8


def test_evaluate_config_composes(tmp_path: Path):
    cfg = compose_cfg("evaluate", [f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert cfg.ckpt_path is None and "datamodule" in cfg


def test_carvana_cpu_experiment_holds_out_the_sample_full_cars(tmp_path: Path):
    from carseg.build import build
    from carseg.data.carvana import scan
    from tests.helpers import SHARED_CARVANA

    cfg = compose_cfg("train", ["experiment=carvana_cpu", f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert Path(cfg.datamodule.data_dir).name == "train_480x320"
    assert cfg.trainer.reload_dataloaders_every_n_epochs == 1 and cfg.datamodule.size_schedule
    if not (SHARED_CARVANA / "train_480x320").is_dir():
        pytest.skip(f"real Carvana data not found at {SHARED_CARVANA} (see the project README: real data tests)")
    overrides = [
        "experiment=carvana_cpu",
        f"paths.root_dir={tmp_path}",
        f"datamodule.data_dir={SHARED_CARVANA / 'train_480x320'}",
        "datamodule.exclude_cars_file=null",
        "datamodule.cache=false",
        "datamodule.num_workers=0",
    ]
    dm = build(compose_cfg("train", overrides, tmp_path / "run").datamodule, "datamodule")
    dm.setup("fit")
    val_cars = {r.car_id for r in dm.val_set.records}
    assert val_cars == {r.car_id for r in scan(SHARED_CARVANA / "sample_full")}
    assert val_cars.isdisjoint({r.car_id for r in dm.train_set.records})
    everything = scan(SHARED_CARVANA / "train_480x320")
    assert len(dm.val_set) == len(scan(SHARED_CARVANA / "sample_full"))
    assert len(dm.train_set) == len(everything) - len(dm.val_set)


def test_carvana_gpu_experiment_pads_full_resolution(tmp_path: Path):
    import torch

    from carseg.build import build

    overrides = ["experiment=carvana_gpu", f"paths.root_dir={tmp_path}", "model.net.encoder_weights=null"]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    assert list(cfg.datamodule.image_size) == [1280, 1918] and cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.channels_last and cfg.model.pad_always and cfg.trainer.accelerator == "gpu"
    module = build(cfg.model, "model", _recursive_=False)
    seen = []
    module.net.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = module(torch.zeros(1, 3, 64, 94, dtype=torch.uint8))
    assert seen == [(64, 96)] and out.shape == (1, 1, 64, 94)  # padded to a multiple of 32, cropped back


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_step(experiment, tiny_root, tmp_path: Path):
    """Each experiment, as written (model, loss, optimiser, schedule, precision, schedules of sizes), runs one
    training step; only data, sizes, devices and weights are pointed at what this machine has."""
    from omegaconf import OmegaConf

    from carseg import runs
    from carseg.training.run import train

    overrides = [
        f"experiment={experiment}",
        *(o for o in tiny_overrides(tiny_root, tmp_path) if not o.startswith("datamodule.synthetic")),
        "datamodule.val_cars=null",
        "datamodule.cache_dir=null",
        "datamodule.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "model.net.encoder_weights=null",
        "model.compile=false",
        "logger=csv",
    ]
    composed = compose_cfg("train", overrides, tmp_path / "run")
    tiny = next(tiny_root.glob("synthetic_*"))
    if composed.datamodule.synthetic is None:  # real Carvana files: the tiny set stands in for them
        overrides.append(f"datamodule.data_dir={tiny}")
    else:
        overrides += [o for o in tiny_overrides(tiny_root, tmp_path) if o.startswith("datamodule.synthetic")]
    if composed.datamodule.size_schedule:  # keep the schedule's shape, at the tiny set's scale
        key, second = ("time", 0.5) if "time" in composed.datamodule.size_schedule[0] else ("epoch", 1)
        overrides.append(f"datamodule.size_schedule=[{{{key}:0,size:[32,48]}},{{{key}:{second},size:[64,96]}}]")
    if composed.datamodule.get("exclude_cars_file"):  # a list of cars left out: one of the tiny set's
        from carseg.data.carvana import scan

        left_out = tmp_path / "left_out.txt"
        left_out.write_text(scan(tiny)[0].car_id + "\n")
        overrides.append(f"datamodule.exclude_cars_file={left_out}")
    if composed.get("refiner"):  # the second stage too, on the tiny set's photos
        overrides += [f"refiner.data.data_dir={tiny}", f"refiner.data.val_dir={tiny}", "refiner.data.crop=64"]
        overrides += ["refiner.data.crops_per_epoch=8", "refiner.data.batch_size=4", "refiner.data.val_crops=4"]
        overrides += ["refiner.max_steps=2"]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    expected = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    assert cfg.model.optimizer.lr == expected.get("model", {}).get("optimizer", {}).get("lr", cfg.model.optimizer.lr)
    train(cfg)
    summary = runs.read_summary(tmp_path / "run")
    assert summary["global_step"] == 1 and summary["best"] is not None
    assert ("refiner" in summary) == bool(cfg.get("refiner"))
    if cfg.get("refiner"):  # trained by steps, on the first stage's own outputs
        assert summary["refiner"]["global_step"] == 2 and summary["refiner"]["coarse"] == cfg.refiner.coarse
