"""Helper processes that end with the process that started them: DataLoader workers of training and
prediction are orphaned when their parent is killed outright (SIGKILL, a node that dies), and would go on
holding their memory. On Linux each worker asks the kernel to kill it when its parent goes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

from lightning_fabric.utilities.seed import pl_worker_init_function

# prctl(2): deliver a signal to this process when its parent ends
PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Have this process killed (SIGKILL) when its parent ends; False where the system cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent ended before the request took hold
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def end_with_launcher() -> bool:
    """In a process that a launcher started for one rank of a multi-process run (Lightning's DDP launcher
    re-runs the command with LOCAL_RANK > 0, as torchrun does): end with the launching process, so that a
    killed rank 0 leaves no rank waiting on the others for ever. False where nothing was to do."""
    if int(os.environ.get("LOCAL_RANK", "0") or 0) == 0:
        return False
    return die_with_parent()


def worker_init(worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: the worker ends with its parent, and is seeded as Lightning seeds
    workers when `seed_everything(workers=True)` asked for it (a loader's own init function replaces
    Lightning's)."""
    die_with_parent()
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        pl_worker_init_function(worker_id)
