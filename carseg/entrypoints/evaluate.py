"""Evaluate a checkpoint (the newest run's best by default): `carseg-evaluate [ckpt_path=...]` (or
`python evaluate.py ...`, `python -m carseg.entrypoints.evaluate ...`)."""

import hydra
from omegaconf import DictConfig

from carseg.config import CONFIG_PATH, VERSION_BASE
from carseg.errors import exit_on_user_error
from carseg.evaluation.run import evaluate


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
