"""Which images `evaluate.py` scores: the training run's own split, or the config's (datamodule_from_run=false)."""

import gzip
import shutil

from omegaconf import OmegaConf

from carseg.data.carvana import scan, split_by_car
from carseg.evaluation.run import evaluate
from tests.helpers import ROOT, compose_cfg, tiny_overrides


def _run_with_checkpoint(tiny_root, tmp_path, val_fraction: float):
    """A run folder as train.py leaves it, holding a (small, pre-trained) checkpoint and its config."""
    run = tmp_path / "logs" / "train" / "runs" / "r1"
    cfg = compose_cfg("train", [*tiny_overrides(tiny_root, tmp_path), f"datamodule.val_fraction={val_fraction}"], run)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "epoch_000.ckpt"
    with gzip.open(ROOT / "tests/fixtures/legacy_unet_mnv3s_64x96.ckpt.gz") as src, open(ckpt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return ckpt


def test_datamodule_from_run_or_from_the_config(tiny_root, tmp_path):
    ckpt = _run_with_checkpoint(tiny_root, tmp_path, val_fraction=0.17)  # the run validated on 1 car of 6
    common = [
        *[o for o in tiny_overrides(tiny_root, tmp_path) if o.startswith(("paths.", "datamodule.synthetic"))],
        f"ckpt_path={ckpt}",
        "datamodule.val_fraction=0.5",  # the evaluation config asks for 3 cars
        "print_config=false",
        "panels=1",
        "worst_k=1",
    ]
    from_run = evaluate(compose_cfg("evaluate", common, tmp_path / "e1"))
    split = split_by_car(scan(next(tiny_root.glob("synthetic_*"))), 0.17, 42)[1]
    assert from_run["images"] == len(split) and from_run["input_size"] == [64, 96]
    from_config = evaluate(compose_cfg("evaluate", [*common, "datamodule_from_run=false"], tmp_path / "e2"))
    assert from_config["images"] == len(split_by_car(scan(next(tiny_root.glob("synthetic_*"))), 0.5, 42)[1])
    assert from_config["images"] > from_run["images"]
