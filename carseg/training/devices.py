"""Trainer arguments as users type them: `trainer.gpus=N` and `precision: auto`, resolved for Lightning 2."""

from __future__ import annotations

import os
from typing import Any

import torch

from carseg import console
from carseg.errors import CarsegError
from carseg.hardware import emulated_bf16, emulated_bf16_message, on_gpu, training_precision

GPUS_HELP = (
    "accepted: a number of GPUs (trainer.gpus=2), -1 for all visible GPUs, 0 for the CPU, a string of GPU ids "
    "(trainer.gpus='\"0,1\"') or a list of ids (trainer.gpus=[0,1])"
)


def _bad(gpus: Any) -> CarsegError:
    return CarsegError(f"trainer.gpus={gpus!r} is not a GPU choice; {GPUS_HELP}")


def _gpu_id(value: Any, gpus: Any) -> int:
    if isinstance(value, bool):
        raise _bad(gpus)
    try:
        gpu = int(str(value).strip())
    except ValueError:
        raise _bad(gpus) from None
    if gpu < 0:
        raise _bad(gpus)
    return gpu


def parse_gpus(gpus: Any) -> int | list[int]:
    """`trainer.gpus` as Lightning 1.x took it → a number of GPUs (-1: all visible ones) or a list of GPU ids.

    An int or a string of one number is a count ("2", 2; -1 for all, 0 for the CPU); a string with commas
    ("0,1", or "3," for GPU 3) or a list is the ids. Anything else raises one clear error naming the forms.
    """
    if isinstance(gpus, (list, tuple)):
        ids = [_gpu_id(g, gpus) for g in gpus]
        if not ids or len(set(ids)) != len(ids):
            raise _bad(gpus)
        return ids
    if isinstance(gpus, str):
        text = gpus.strip()
        if "," in text:
            return parse_gpus([g for g in text.split(",") if g.strip()] or [""])
        gpus = text
    if isinstance(gpus, bool):
        raise _bad(gpus)
    try:
        count = int(gpus) if isinstance(gpus, (int, str)) else None
    except ValueError:
        count = None
    if count is None or count < -1:
        raise _bad(gpus)
    return count


def resolve_trainer_args(args: dict[str, Any]) -> dict[str, Any]:
    """Translate `gpus` into accelerator/devices/strategy and `precision: auto` into a Lightning precision.

    `gpus=N` means accelerator=gpu, devices=N and, for N > 1, strategy=ddp. Asking for more GPUs than
    are visible is an error raised here, before anything starts.
    """
    args = dict(args)
    gpus = args.pop("gpus", None)
    if gpus is not None:
        chosen, visible = parse_gpus(gpus), torch.cuda.device_count()
        if chosen == -1:
            if visible == 0:
                raise CarsegError(
                    "trainer.gpus=-1 asks for all visible GPUs but none is visible. Fix: train on CPU with "
                    "trainer.gpus=0 (or trainer=cpu), or check CUDA_VISIBLE_DEVICES and the driver"
                )
            chosen = visible
        wanted = len(chosen) if isinstance(chosen, list) else chosen
        if wanted > visible:
            shown = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise CarsegError(
                f"trainer.gpus={gpus} asks for {wanted} GPU(s) but {visible} {'is' if visible == 1 else 'are'} visible"
                + (f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else "")
                + ". Fix: lower trainer.gpus, or train on CPU with trainer=cpu (trainer=ddp_cpu for 2 processes)"
            )
        missing = [g for g in chosen if g >= visible] if isinstance(chosen, list) else []
        if missing:
            raise CarsegError(
                f"trainer.gpus={gpus!r} names GPU id(s) {missing} but the visible GPUs are 0..{visible - 1}"
                ". Fix: name visible ids, or give a number of GPUs"
            )
        if wanted == 0:
            args.update(accelerator="cpu", devices=1)
        else:
            args.update(accelerator="gpu", devices=chosen)
            if wanted > 1 and args.get("strategy") in (None, "auto"):
                args["strategy"] = "ddp"
    accelerator = str(args.get("accelerator", "auto"))
    if args.get("precision", "auto") == "auto":
        args["precision"] = training_precision(accelerator)
    elif emulated_bf16(str(args["precision"]), on_gpu(accelerator)):
        fix = "trainer.precision=32-true (the same schedule; or auto, which picks bf16 only where it is native)"
        console.warning(emulated_bf16_message(f"trainer.precision={args['precision']}", fix))
    return args
