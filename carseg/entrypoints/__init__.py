"""The Hydra entry points: `carseg-train` / `python train.py`, `carseg-evaluate` / `python evaluate.py`."""
