"""Trainer arguments as users type them: `trainer.gpus=N` and `precision: auto`, resolved for Lightning 2."""

from __future__ import annotations

import os
from typing import Any

import torch

from carseg.errors import CarsegError
from carseg.hardware import training_precision

GPUS_HELP = "give a number of GPUs (2), -1 for all, or a list of ids"


def _gpu_count(gpus: Any) -> int:
    if isinstance(gpus, (list, tuple)):
        return len(gpus)
    if isinstance(gpus, str):
        gpus = gpus.strip()
        if "," in gpus:
            return len([g for g in gpus.split(",") if g.strip()])
        try:
            gpus = int(gpus)
        except ValueError:
            raise CarsegError(f"trainer.gpus={gpus!r}: {GPUS_HELP}") from None
    if gpus == -1:
        return torch.cuda.device_count()
    if not isinstance(gpus, int) or gpus < -1:
        raise CarsegError(f"trainer.gpus={gpus!r}: {GPUS_HELP}")
    return gpus


def resolve_trainer_args(args: dict[str, Any]) -> dict[str, Any]:
    """Translate `gpus` into accelerator/devices/strategy and `precision: auto` into a Lightning precision.

    `gpus=N` means accelerator=gpu, devices=N and, for N > 1, strategy=ddp. Asking for more GPUs than
    are visible is an error raised here, before anything starts.
    """
    args = dict(args)
    gpus = args.pop("gpus", None)
    if gpus is not None:
        wanted, visible = _gpu_count(gpus), torch.cuda.device_count()
        if wanted > visible:
            shown = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise CarsegError(
                f"trainer.gpus={gpus} asks for {wanted} GPU(s) but {visible} {'is' if visible == 1 else 'are'} visible"
                + (f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else "")
                + ". Fix: lower trainer.gpus, or train on CPU with trainer=cpu (trainer=ddp_cpu for 2 processes)"
            )
        if wanted == 0:
            args.update(accelerator="cpu", devices=1)
        else:
            args.update(accelerator="gpu", devices=list(gpus) if isinstance(gpus, (list, tuple)) else wanted)
            if wanted > 1 and args.get("strategy") in (None, "auto"):
                args["strategy"] = "ddp"
    if args.get("precision", "auto") == "auto":
        args["precision"] = training_precision(args.get("accelerator", "auto"))
    return args
