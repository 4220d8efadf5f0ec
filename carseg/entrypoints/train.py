"""Train a car segmentation model: `carseg-train [group=option ...] [key=value ...]` (or `python train.py ...`,
`python -m carseg.entrypoints.train ...`)."""

import hydra
from omegaconf import DictConfig

from carseg.config import CONFIG_PATH, VERSION_BASE
from carseg.errors import exit_on_user_error
from carseg.training.run import train


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
