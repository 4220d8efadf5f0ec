"""Shared test helpers: composing configs, running the entry points, reading W&B offline files."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_CARVANA = ROOT.parent / "shared" / "carvana"
# the real full-size validation photos (a machine without ../shared names its own copy, as the device check does)
SAMPLE_FULL = Path(os.environ.get("CARSEG_SAMPLE_FULL") or SHARED_CARVANA / "sample_full")
TINY = {"num_cars": 6, "width": 144, "height": 96, "seed": 1}
TINY_PAIRS = TINY["num_cars"] * 16  # photos in the tiny set: 16 angles per car, as in Carvana


def tiny_overrides(data_root: Path, out: Path) -> list[str]:
    """Overrides for a fast run on the tiny synthetic set, all outputs under `out`."""
    return [
        f"paths.root_dir={out}",
        f"paths.data_dir={data_root}",
        *(f"datamodule.synthetic.{k}={v}" for k, v in TINY.items()),
        "datamodule.image_size=[64,96]",
        "datamodule.val_fraction=0.34",
        "datamodule.num_workers=0",
        "datamodule.batch_size=8",
        "trainer.log_every_n_steps=2",
        "print_config=false",
    ]


def optuna_overrides(data_root: Path, out: Path, n_trials: int = 2) -> list[str]:
    """A `hparams_search=optuna` sweep of `n_trials` on the tiny set; its outputs land under the working directory
    (`<cwd>/logs/train/optuna/carseg`), as the default paths put them."""
    kept = [o for o in tiny_overrides(data_root, out) if not o.startswith("paths.root_dir")]
    return [*kept, "hparams_search=optuna", f"hydra.sweeper.n_trials={n_trials}"]


def compose_cfg(
    config_name: str, overrides: list[str], output_dir: Path | None = None, keep_hydra: bool = False
) -> DictConfig:
    """Compose a config as `@hydra.main` would, with HydraConfig set so `${hydra:...}` resolves."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.runtime.cwd = str(ROOT)
        output_dir.mkdir(parents=True, exist_ok=True)
    HydraConfig().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg.hydra
    return cfg


def start_script(script: str, args: list[str], cwd: Path = ROOT) -> subprocess.Popen:
    """Start `python <script> args...` (W&B offline), to stop it midway: its output comes back as text."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_when(proc: subprocess.Popen, ready, seconds: float = 300) -> tuple[str, str]:
    """Send `proc` SIGTERM once `ready()` holds (or it ended, or `seconds` passed); its (stdout, stderr)."""
    deadline = time.time() + seconds
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=300)


def run_script(script: str, args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the project root with W&B forced offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wandb_records(path: Path) -> list:
    """Protobuf records of a W&B `.wandb` file (a LevelDB-style log after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        else:
            break
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_history(run_dir: Path, key: str) -> list[float]:
    """All logged values of `key` in the offline W&B run under `run_dir`."""
    import json

    values = []
    for record in wandb_records(next(run_dir.glob("*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                if (item.key or "/".join(item.nested_key)) == key:
                    values.append(json.loads(item.value_json))
    return values


class SigtermAt:
    """A Lightning callback (added with `+callbacks.stop._target_=tests.helpers.SigtermAt`) that sends this
    process SIGTERM after training step `step`: an interruption at a known point."""

    def __new__(cls, step: int):
        class _Stop(pl.Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.global_step == step:
                    os.kill(os.getpid(), signal.SIGTERM)

        return _Stop()
