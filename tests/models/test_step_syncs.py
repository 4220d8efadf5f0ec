"""The training step reads no value from the device on the steps the loggers skip: on a GPU each `.item()`
waits for every queued kernel, and carseg's per-step work must not stall the step."""

import traceback

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from carseg.bench.measure import build_module
from carseg.bench.train import _Batches


def _item_calls(monkeypatch, log_every: int, steps: int = 12) -> int:
    module = build_module("unet_resnet18_light")
    calls = []
    item = torch.Tensor.item

    def counted(self):
        stack = traceback.extract_stack(limit=8)
        if not any("torch/optim" in frame.filename for frame in stack):  # CPU Adam reads its step count
            calls.append(1)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        log_every_n_steps=log_every,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(_Batches((32, 64), 2, steps), batch_size=None))
    monkeypatch.setattr(torch.Tensor, "item", item)
    return len(calls)


@pytest.mark.slow
def test_a_step_value_is_read_only_when_it_is_logged(monkeypatch):
    every_step = _item_calls(monkeypatch, log_every=1)
    never = _item_calls(monkeypatch, log_every=100)  # no step of the twelve is logged
    assert every_step >= 12  # a logged step's loss is read once: at least one read a step
    assert never <= 6  # the epoch's end alone reads values
