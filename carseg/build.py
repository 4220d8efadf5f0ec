"""`hydra.utils.instantiate` with errors that name the config key."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from carseg.errors import CarsegError


def build(conf: Any, key: str, **kwargs: Any) -> Any:
    """Instantiate `conf` (found at config key `key`); a failure becomes one CarsegError naming the key."""
    missing = sorted(OmegaConf.missing_keys(conf)) if isinstance(conf, DictConfig) else []
    if missing:  # keys are full paths when `conf` is part of a composed config
        names = [m if m.startswith(f"{key}.") else f"{key}.{m}" for m in missing]
        raise CarsegError(
            f"{', '.join(names)} not set (??? in the config): choose a concrete `{key}` config from its group "
            f"({key}=<option>) or set them ({names[0]}=<value>)"
        )
    try:
        return instantiate(conf, **kwargs)
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None:  # Hydra wraps errors raised in constructors
            if isinstance(cause, CarsegError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        message = str(err).splitlines()[-1] if str(err) else type(err).__name__
        if isinstance(err, InstantiationException) and err.__cause__ is not None:
            message = f"{type(err.__cause__).__name__}: {err.__cause__}"
        raise CarsegError(f"{key} cannot be built from the config: {message}. Check the `{key}` keys") from err
