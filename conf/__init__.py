"""carseg's Hydra configs, installed as the `carseg.conf` package (see carseg/config.py)."""
