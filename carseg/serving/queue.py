"""Inference off the event loop, behind a bounded queue: a request that finds it full is refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """Every worker is busy and every waiting place is taken."""


class BoundedQueue:
    """Runs jobs on `workers` threads (one shared model), at most `waiting` more queued behind them."""

    def __init__(self, workers: int = 1, waiting: int = 8):
        if workers < 1 or waiting < 0:
            raise ValueError(f"workers={workers}, waiting={waiting}: need at least 1 worker and 0 waiting places")
        self.workers, self.capacity = workers, workers + waiting
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="carseg-serve")
        self.pending = 0  # only touched on the event loop's thread

    async def run(self, job: Callable[[], T]) -> T:
        """The job's result, computed on a worker thread; QueueFull when no place is free."""
        if self.pending >= self.capacity:
            raise QueueFull
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, job)
        finally:
            self.pending -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
