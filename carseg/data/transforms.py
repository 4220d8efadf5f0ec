"""Albumentations pipelines built from config lists of transforms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from carseg.errors import CarsegError


def build_pipeline(transforms: Sequence[Any] | None) -> A.Compose:
    """`A.Compose` of transforms given as objects or as Hydra configs with `_target_`."""
    built = []
    for i, t in enumerate(transforms or []):
        if isinstance(t, (dict, DictConfig)):
            try:
                t = instantiate(t)
            except Exception as err:
                cfg = OmegaConf.to_container(t) if isinstance(t, DictConfig) else t
                raise CarsegError(f"datamodule.train_transforms[{i}] = {cfg} cannot be built: {err}") from err
        if not isinstance(t, A.BasicTransform | A.BaseCompose):
            raise CarsegError(f"datamodule.train_transforms[{i}] is not an albumentations transform: {t!r}")
        built.append(t)
    return A.Compose(built)
