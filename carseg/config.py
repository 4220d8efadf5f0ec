"""carseg's Hydra configs: the `carseg.conf` package (the `conf/` folder of a checkout, installed with carseg),
composed by the entry points and, for benchmarks, outside them."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

CONFIG_MODULE = "carseg.conf"
# what `@hydra.main(config_path=...)` takes: found in an installed carseg as in a source checkout
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
VERSION_BASE = "1.3"


def compose_config(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config `config_name` (train or evaluate) with `overrides`, as the entry point would see it
    (without Hydra's own section; keys that need a running job, such as paths.output_dir, stay unresolved)."""
    with initialize_config_module(version_base=VERSION_BASE, config_module=CONFIG_MODULE):
        return compose(config_name=config_name, overrides=list(overrides))


def model_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The `model` section for `model=<name>` (conf/model/<name>.yaml) with `model.*` overrides."""
    return compose_config("train", [f"model={name}", *overrides]).model


def config_choices(config_name: str = "train", overrides: Sequence[str] = ()) -> dict[str, str]:
    """The option chosen in each config group (`{"model": "unet_resnet18_light", ...}`) after `overrides`,
    experiments included."""
    with initialize_config_module(version_base=VERSION_BASE, config_module=CONFIG_MODULE):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    return {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items() if v is not None}
