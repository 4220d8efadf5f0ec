"""Train a car segmentation model: `python train.py [group=option ...] [key=value ...]` (same as `carseg-train`)."""

from carseg.entrypoints.train import main

if __name__ == "__main__":
    main()
