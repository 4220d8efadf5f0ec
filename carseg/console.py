"""Readable console output: the composed config as a rich tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

FIRST = ("datamodule", "model", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, order: Sequence[str] = FIRST, save_to: str | Path | None = None) -> None:
    """Print the config as a tree (main groups first) and optionally save it as text."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as fh:
            rich.print(tree, file=fh)
