"""The one exception type carseg raises for problems a user can fix."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class CarsegError(Exception):
    """A problem with input, config or environment; the message names the file or key and the fix."""


def exit_on_user_error(fn: F) -> F:
    """Print a `CarsegError` as one line (no traceback) and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CarsegError as err:
            print(f"carseg: error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
