"""Checkpoints: reading one back as a SegmentationModule and the size it was trained at (one clear error per
problem), and writing one outside a Trainer run (training writes its own through Lightning's ModelCheckpoint)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from carseg.errors import CarsegError
from carseg.models.module import SegmentationModule
from carseg.models.quality import QualityModel
from carseg.models.refiner import EdgeRefiner
from carseg.runs import run_config, run_dir_of

# hyper-parameters every carseg checkpoint holds (SegmentationModule's constructor arguments)
REQUIRED_HPARAMS = ("net", "loss", "optimizer")


def save_checkpoint(module: SegmentationModule, path: str | Path, image_size: list[int] | None = None) -> Path:
    """Write `module` as a checkpoint that `load_checkpoint` reads, as Lightning writes it (weights, the
    module's hyper-parameters and, when given, the (H, W) it was trained at)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt: dict[str, Any] = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    if image_size is not None:
        ckpt["datamodule_hyper_parameters"] = {"image_size": [int(v) for v in image_size]}
    torch.save(ckpt, path)
    return path


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, with one clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CarsegError(f"ckpt_path={path}: no such file")
    try:
        # data, not code: the unpickler builds tensors and plain containers only, never arbitrary objects
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if re.search(r"unsupported global", str(err), re.IGNORECASE):
            raise CarsegError(
                f"{path}: holds Python objects beyond weights and plain data, which carseg does not load (a "
                "checkpoint is data, not code). If you trust the file, re-save it as plain data: load it with "
                "torch.load(path, weights_only=False) and torch.save it with its state_dict and "
                "hyper_parameters as dicts, lists, numbers and strings"
            ) from None
        raise _corrupt(path, err) from None
    except Exception as err:  # whatever a damaged file makes the unpickler raise (MemoryError, OverflowError, ...)
        raise _corrupt(path, err) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CarsegError(f"{path}: not a Lightning checkpoint of carseg (no state_dict / hyper_parameters)")
    return ckpt


def _corrupt(path: Path, err: BaseException) -> CarsegError:
    first = (str(err).splitlines() or [""])[0][:160]
    return CarsegError(
        f"{path}: corrupt or not a checkpoint ({type(err).__name__}: {first}). "
        "Pass a .ckpt written by `python train.py` (e.g. checkpoints/last.ckpt of a run)"
    )


def trained_size(ckpt: dict[str, Any], path: str | Path) -> list[int] | None:
    """The (H, W) a checkpoint was trained at: the data module's hyper-parameters, else (older checkpoints)
    the config of the run that wrote it; None when neither records it."""
    size = (ckpt.get("datamodule_hyper_parameters") or {}).get("image_size")
    run_dir = run_dir_of(path)
    if size is None and run_dir is not None:
        size = run_config(run_dir).get("datamodule", {}).get("image_size")
    return [int(v) for v in size] if size is not None else None


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[SegmentationModule, list[int] | None]:
    """A SegmentationModule rebuilt from its checkpoint (architecture from the saved config), and the
    (H, W) it was trained at (None if not recorded)."""
    ckpt = read_checkpoint(path, map_location)
    hparams = ckpt["hyper_parameters"]
    if not set(REQUIRED_HPARAMS) <= set(hparams):
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
    return module.to(map_location), trained_size(ckpt, path)


# the key under which a checkpoint carries its edge refiner (`carseg.models.refiner`)
REFINER_KEY = "carseg_edge_refiner"


def embed_refiner(path: str | Path, refiner: EdgeRefiner, band: int, alpha_sharpness: float = 1.0) -> Path:
    """Add the edge refiner's weights, width, band and its alpha's sharpness to the checkpoint at `path`
    (rewritten atomically: an interruption leaves the old file whole)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    ckpt[REFINER_KEY] = {
        "width": refiner.width,
        "residual": bool(refiner.residual),
        "context": bool(refiner.context),
        "layers": refiner.layers,
        "mlp": refiner.mlp,
        "stem": refiner.stem_width,
        "band": int(band),
        "alpha_sharpness": float(alpha_sharpness),
        "state_dict": {k: v.detach().cpu() for k, v in refiner.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_refiner(path: str | Path, map_location: str = "cpu") -> tuple[EdgeRefiner, int] | None:
    """The edge refiner a checkpoint carries and its band (pixels), or None when it has none; the refiner's
    `alpha_sharpness` attribute is the sharpness of its cut-out alpha (1.0 for refiners written without one)."""
    entry = read_checkpoint(path, map_location).get(REFINER_KEY)
    if entry is None:
        return None
    try:
        refiner = EdgeRefiner(
            int(entry["width"]),
            bool(entry.get("residual", False)),
            bool(entry.get("context", True)),
            int(entry.get("layers", 2)),
            int(entry.get("mlp", 0)),
            int(entry.get("stem", 0)),
        )
        refiner.load_state_dict(entry["state_dict"])
        refiner.alpha_sharpness = float(entry.get("alpha_sharpness", 1.0))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CarsegError(
            f"{path}: its edge refiner cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
            "predict without it (edge_refiner=false in evaluate.py, --no-refiner in carseg predict and serve) or "
            "train it again (`carseg refine RUN_DIR`)"
        ) from err
    return refiner.to(map_location).eval(), int(entry.get("band", 16))


QUALITY_KEY = "carseg_quality"


def embed_quality(path: str | Path, model: QualityModel) -> Path:
    """Store the quality calibration in the checkpoint at `path` (rewritten atomically)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    ckpt[QUALITY_KEY] = model.to_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_quality(path: str | Path) -> QualityModel | None:
    """The quality calibration a checkpoint carries, or None (the raw score is used)."""
    entry = read_checkpoint(path).get(QUALITY_KEY)
    if entry is None:
        return None
    try:
        return QualityModel.from_dict(entry)
    except (KeyError, TypeError, ValueError) as err:
        raise CarsegError(
            f"{path}: its quality calibration cannot be read ({type(err).__name__}: {err}); fit it again "
            "(`carseg calibrate`)"
        ) from err
