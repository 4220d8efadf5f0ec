"""carseg's Hydra plugin: an Optuna sweeper whose study continues after an interruption (Hydra finds plugins
only in the `hydra_plugins` namespace package)."""
