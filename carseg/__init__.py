"""carseg: car segmentation on Carvana-style studio photos with Hydra + PyTorch Lightning."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${carseg_cwd:}` in conf/paths: the directory carseg was started from. Unlike `${hydra:runtime.cwd}` it
# also resolves where Hydra's runtime config is not set yet (e.g. when a sweeper sets up its directory).
OmegaConf.register_new_resolver("carseg_cwd", os.getcwd, replace=True)
# `${carseg_direction:${optimized_mode}}` in conf/hparams_search: Optuna's word for a Lightning mode.
OmegaConf.register_new_resolver(
    "carseg_direction", lambda mode: {"max": "maximize", "min": "minimize"}.get(str(mode), str(mode)), replace=True
)
