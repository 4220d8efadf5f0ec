"""Optional parts of carseg: a module that only some users need is imported where it is used, and its absence
is one line naming the extra that brings it (`pip install 'carseg[serve]'`)."""

from __future__ import annotations

import importlib
from types import ModuleType

from carseg.errors import CarsegError


def require(module: str, extra: str, what: str) -> ModuleType:
    """`module`, imported; without it, a CarsegError saying that `what` needs carseg's `extra` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CarsegError(
            f"{what} needs {err.name or module}, which comes with carseg's {extra} extra: pip install 'carseg[{extra}]'"
        ) from None
