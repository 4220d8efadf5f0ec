"""The one exception type carseg raises for problems a user can fix."""

from __future__ import annotations

import functools
import logging
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
            log, root = logging.getLogger("carseg"), logging.getLogger()
            if log.handlers or root.handlers:  # a run's log file keeps it (and carseg's console shows it)
                log.error(str(err))
            if not log.handlers and not any(type(h) is logging.StreamHandler for h in root.handlers):
                print(f"carseg: error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
