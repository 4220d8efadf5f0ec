"""Train a car segmentation model: `python train.py [group=option ...] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from carseg.errors import exit_on_user_error
from carseg.training.run import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
