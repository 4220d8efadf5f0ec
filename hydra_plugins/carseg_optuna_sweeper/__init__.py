"""carseg's Hydra plugin: an Optuna sweeper on current Optuna whose study continues after an interruption
(Hydra finds plugins only in the `hydra_plugins` namespace package)."""
