"""Hardware and precision: what this machine runs natively, and which precision training and inference use."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from carseg.errors import CarsegError

INFERENCE_PRECISIONS = ("32", "bf16", "16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 units (AVX512-BF16 or AMX), which make bf16 autocast fast."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _bf16_where(on_gpu: bool) -> str:
    """ "bf16" where the device runs it natively, else "16" on a GPU and "32" on a CPU."""
    if on_gpu:
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16"
    return "bf16" if cpu_has_bf16() else "32"


def on_gpu(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` trains on a GPU ("auto": where one is visible)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def training_precision(accelerator: str) -> str:
    """Lightning's precision for `precision: auto`: bf16-mixed where the hardware runs it natively
    (recent GPUs, bf16 CPUs), else 16-mixed on a GPU and 32-true on a CPU."""
    return {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true"}[_bf16_where(on_gpu(accelerator))]


def emulated_bf16(precision: str, gpu: bool) -> bool:
    """Whether `precision` asks for bf16 on a CPU without bf16 units, where oneDNN emulates it: a U-Net ResNet-18
    training step at 160x240 measured 9x slower than fp32 on a 2-core AVX2 CPU (0.34 against 3.0 img/s)."""
    return str(precision).startswith("bf16") and not gpu and not cpu_has_bf16()


def emulated_bf16_message(key: str, fix: str) -> str:
    """The warning for `emulated_bf16`: the key that asked for bf16 and the value that avoids it."""
    return (
        f"{key} asks for bf16, but this CPU has no bf16 units (AVX512-BF16 or AMX): bf16 is emulated here and runs "
        f"several times slower than fp32 (9x for a training step measured on an AVX2 CPU). Fix: {fix}"
    )


def inference_precision(precision: str, device: torch.device) -> str:
    """`auto`, 32, bf16 or 16 → the autocast precision of inference on `device` ("32", "bf16" or "16")."""
    if precision == "auto":
        return _bf16_where(device.type == "cuda")
    if precision not in INFERENCE_PRECISIONS:
        raise CarsegError(f"precision={precision!r}: use auto, 32, bf16 or 16")
    return precision


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of an inference precision ("32", "bf16" or "16", as `inference_precision` gives)
    on `device`; "32" is a context that changes nothing."""
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
