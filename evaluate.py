"""Evaluate a checkpoint (the newest run's best by default): `python evaluate.py [ckpt_path=...]`."""

import hydra
from omegaconf import DictConfig

from carseg.errors import exit_on_user_error
from carseg.evaluation.run import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
