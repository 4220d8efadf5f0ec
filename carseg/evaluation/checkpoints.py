"""Finding and loading checkpoints of training runs."""

from __future__ import annotations

import json
from pathlib import Path

from carseg.errors import CarsegError
from carseg.models.module import SegmentationModule


def find_best_checkpoint(log_dir: str | Path) -> Path:
    """The best checkpoint of the newest training run under `log_dir` (runs and multirun jobs)."""
    root = Path(log_dir) / "train"
    candidates = []
    for summary in root.glob("**/summary.json"):
        best = json.loads(summary.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            candidates.append(Path(best))
    if not candidates:  # runs that were interrupted before they wrote a summary
        candidates = [p for p in root.glob("**/checkpoints/*.ckpt") if p.name != "last.ckpt"]
    if not candidates:
        raise CarsegError(f"no checkpoint found under {root}: train first (`make train`) or pass ckpt_path=<file.ckpt>")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def load_module(path: str | Path, map_location: str = "cpu") -> SegmentationModule:
    """Load a SegmentationModule checkpoint, with one clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CarsegError(f"ckpt_path={path}: no such file")
    try:
        return SegmentationModule.load_from_checkpoint(path, map_location=map_location)
    except (RuntimeError, KeyError, TypeError, EOFError, OSError, ValueError, AttributeError) as err:
        raise CarsegError(
            f"{path}: not a loadable carseg checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "Pass ckpt_path= a .ckpt written by `python train.py`"
        ) from err


def run_dir_of(checkpoint: Path) -> Path | None:
    """The training run directory holding `checkpoint` (it has `.hydra/config.yaml`), if any."""
    for parent in checkpoint.resolve().parents:
        if (parent / ".hydra" / "config.yaml").is_file():
            return parent
    return None
