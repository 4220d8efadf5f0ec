"""Experiment loggers: Weights & Biases that goes offline by itself when no API key is configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger

from carseg import console


def wandb_api_key_configured() -> bool:
    """Whether W&B can authenticate: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_logger(offline: bool | str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """A `WandbLogger`; `offline="auto"` logs offline unless an API key is configured (or WANDB_MODE says)."""
    mode = os.environ.get("WANDB_MODE")
    if offline == "auto":
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_api_key_configured())
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if offline:
        console.info(
            f"W&B has no API key here, so it logs offline under {Path(save_dir) / 'wandb'}; "
            "upload later with `wandb sync <that folder>/offline-run-*` (or `wandb login` first to log online)"
        )
    return WandbLogger(offline=bool(offline), save_dir=save_dir, **kwargs)
