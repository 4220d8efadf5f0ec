"""Helper processes end with their parent: a loader worker of a process killed outright does not live on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carseg.processes import worker_init

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")

# a parent that starts a DataLoader with two workers through carseg's worker_init, reports the workers'
# pids, and waits to be killed
PARENT = """
import os, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from carseg.processes import worker_init

class Slow(Dataset):
    def __len__(self):
        return 10_000
    def __getitem__(self, i):
        time.sleep(0.05)
        return torch.tensor(os.getpid())

it = iter(DataLoader(Slow(), batch_size=1, num_workers=2, worker_init_fn=worker_init, prefetch_factor=64))
pids = {int(next(it)) for _ in range(8)}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.is_file() and "State:\tZ" not in status.read_text()


@pytest.mark.slow
def test_loader_workers_end_when_their_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        os.kill(parent.pid, signal.SIGKILL)  # a node that dies: no cleanup runs in the parent
        parent.wait(timeout=30)
        deadline = time.time() + 20
        while any(_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_worker_init_seeds_as_lightning_does(monkeypatch):
    """A loader's own init function replaces Lightning's: the workers are seeded exactly as Lightning would."""
    import random

    import torch
    from lightning_fabric.utilities.seed import pl_worker_init_function

    from carseg import processes

    called = []
    monkeypatch.setattr(processes, "die_with_parent", lambda: called.append(True))  # not on the test process
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    draws = []
    for init in (worker_init, pl_worker_init_function):
        torch.manual_seed(123 + 1)  # as a worker's initial seed: the base seed plus its id
        init(1)
        draws.append((random.random(), torch.rand(1).item()))
    assert draws[0] == draws[1] and called == [True]
