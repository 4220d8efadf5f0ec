"""Finding and loading checkpoints of training runs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

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


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, with one clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CarsegError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        raise CarsegError(
            f"{path}: corrupt or not a checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:160]}). "
            "Pass a .ckpt written by `python train.py` (e.g. checkpoints/last.ckpt of a run)"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CarsegError(f"{path}: not a Lightning checkpoint of carseg (no state_dict / hyper_parameters)")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[SegmentationModule, list[int] | None]:
    """A SegmentationModule rebuilt from its checkpoint (architecture from the saved config), and the
    (H, W) it was trained at (from the data module's hyper-parameters; None if not recorded)."""
    ckpt = read_checkpoint(path, map_location)
    hparams = ckpt["hyper_parameters"]
    if not {"net", "loss", "optimizer"} <= set(hparams):
        raise CarsegError(f"{path}: a checkpoint of another model class, not of carseg's SegmentationModule")
    try:
        module = SegmentationModule(**hparams)
    except CarsegError:
        raise
    except Exception as err:
        raise CarsegError(f"{path}: its model config cannot be built here ({type(err).__name__}: {err})") from err
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CarsegError(
            f"{path}: its weights do not fit the architecture its config describes "
            f"({str(err).splitlines()[0][:200]}); was the file edited or written by another model?"
        ) from err
    size = (ckpt.get("datamodule_hyper_parameters") or {}).get("image_size")
    run_dir = run_dir_of(Path(path))
    if size is None and run_dir is not None:  # checkpoints that predate the record: the run's config
        from omegaconf import OmegaConf

        size = OmegaConf.load(run_dir / ".hydra" / "config.yaml").get("datamodule", {}).get("image_size")
    return module.to(map_location), ([int(v) for v in size] if size is not None else None)


def run_dir_of(checkpoint: Path) -> Path | None:
    """The training run directory holding `checkpoint` (it has `.hydra/config.yaml`), if any."""
    for parent in checkpoint.resolve().parents:
        if (parent / ".hydra" / "config.yaml").is_file():
            return parent
    return None
