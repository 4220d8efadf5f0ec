"""Models: the smp model factory, losses and the LightningModule."""
