"""Training: device resolution, loggers, callbacks and the Hydra task."""
