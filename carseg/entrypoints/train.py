"""Train a car segmentation model: `carseg-train [group=option ...] [key=value ...]` (or `python train.py ...`,
`python -m carseg.entrypoints.train ...`)."""

import hydra
from hydra.core.plugins import Plugins
from omegaconf import DictConfig

from carseg.config import CONFIG_PATH, VERSION_BASE
from carseg.errors import exit_on_user_error
from carseg.training.run import train
from hydra_plugins.carseg_optuna_sweeper.optuna_sweeper import CarsegOptunaSweeper

# Hydra finds plugins by listing the hydra_plugins folders; an editable install of carseg hides its folder
# from that listing, so carseg's sweeper (hparams_search=optuna) is registered here by name as well (its import also
# registers its config, hydra/sweeper=carseg_optuna).
Plugins.instance().register(CarsegOptunaSweeper)


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
