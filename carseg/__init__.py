"""carseg: car segmentation on Carvana-style studio photos with Hydra + PyTorch Lightning."""

__version__ = "0.1.0"
