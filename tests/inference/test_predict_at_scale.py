"""`carseg predict` at scale: several processes (DDP on CPU), a streamed submission, resuming a stopped run,
bad photos that cost no other photo its outputs, and ensembles."""

import csv
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from carseg.data.checks import is_truncated
from carseg.data.rle import rle_decode
from carseg.inference.predictor import Predictor
from carseg.inference.writer import submitted_names
from tests.helpers import SHARED_CARVANA

pytestmark = pytest.mark.slow
DAMAGED = ("broken_truncated.jpg", "broken_text.jpg", "broken_empty.png")


@pytest.fixture(scope="module")
def kaggle_like(tiny_data, tmp_path_factory) -> Path:
    """A test folder like Kaggle's: full-size 1918x1280 photos (the synthetic cars, enlarged), a few real ones
    when the shared sample is here, and a few damaged files."""
    folder = tmp_path_factory.mktemp("kaggle_test")
    for src in sorted((tiny_data / "train").glob("*.jpg"))[:32]:
        image = cv2.imread(str(src))
        cv2.imwrite(str(folder / src.name), cv2.resize(image, (1918, 1280), interpolation=cv2.INTER_CUBIC))
    for src in sorted((SHARED_CARVANA / "sample_full" / "train").glob("*.jpg"))[:4]:
        shutil.copy(src, folder / src.name)
    good = next(folder.glob("*.jpg")).read_bytes()
    (folder / DAMAGED[0]).write_bytes(good[:2000])
    (folder / DAMAGED[1]).write_text("not a photo")
    (folder / DAMAGED[2]).write_bytes(b"")
    return folder


def _carseg(args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "carseg.cli", "predict", *map(str, args), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kwargs,
    )


def _unreadable(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if cv2.imread(str(p)) is None or is_truncated(p)}


def _same_files(a: Path, b: Path) -> None:
    """The same files; masks, rows and failures byte for byte. A cut-out's alpha is the model's probability,
    which the convolutions may round differently in another batching: a level of 255 at most."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert errors == [] and all(name.endswith("_cutout.png") for name in mismatch), mismatch
    for name in mismatch:
        one, two = (np.asarray(Image.open(folder / name)).astype(int) for folder in (a, b))
        assert one.shape == two.shape and np.array_equal(one[..., :3], two[..., :3]), name
        assert np.abs(one[..., 3] - two[..., 3]).max() <= 1, name


def test_two_processes_write_what_one_writes(best_ckpt, kaggle_like, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = [kaggle_like, "--ckpt", best_ckpt, "--workers", "0"]
    first = _carseg([*args, "--out", one, "--submission", one / "submission.csv"])
    second = _carseg(
        [*args, "--out", two, "--submission", two / "submission.csv", "--devices", "2", "--accelerator", "cpu"]
    )
    for result in (first, second):  # bad photos: listed, exit non-zero, one clear line, everything else written
        assert result.returncode == 2 and "could not be read" in result.stderr and "Traceback" not in result.stderr
    _same_files(one, two)
    bad = _unreadable(kaggle_like)
    assert bad >= set(DAMAGED)
    with open(two / "failures.csv") as fh:
        assert {Path(r["path"]).name for r in csv.DictReader(fh)} == bad
    good = sorted(p for p in kaggle_like.iterdir() if p.name not in bad)
    with open(two / "submission.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["img", "rle_mask"] and [r[0] for r in rows[1:]] == [p.name for p in good]  # once, in order
    for name, code in rows[1:]:
        mask = np.asarray(Image.open(two / f"{Path(name).stem}_mask.png")) > 0
        np.testing.assert_array_equal(rle_decode(code, mask.shape), mask)


def test_a_stopped_run_finishes_where_it_stopped(best_ckpt, kaggle_like, tmp_path):
    stopped, full = tmp_path / "stopped", tmp_path / "full"
    args = [kaggle_like, "--ckpt", best_ckpt, "--workers", "0", "--devices", "2", "--accelerator", "cpu"]
    args += ["--write-threads", "2"]  # outputs written beside the model, as on a GPU: a stop still cuts none
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carseg.cli",
            "predict",
            *map(str, args),
            "--quiet",
            "--out",
            str(stopped),
            "--submission",
            str(stopped / "submission.csv"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while len(list(stopped.glob("*_cutout.png"))) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-2000:]
    total = len(list(kaggle_like.iterdir())) - len(_unreadable(kaggle_like))
    cut_out = {p.name.removesuffix("_cutout.png") for p in stopped.glob("*_cutout.png")}
    assert 10 <= len(cut_out) < total  # stopped midway
    # a photo is done when its files and its Kaggle row are; its files are written before its row, so a
    # stop may leave photos with files and no row (done again by the rerun), never a row without files
    rows = {Path(name).stem for name in submitted_names(stopped / "submission.csv")}
    readable = {p.stem for p in kaggle_like.iterdir()} - {Path(n).stem for n in _unreadable(kaggle_like)}
    assert rows & readable <= cut_out
    assert all((stopped / f"{stem}_mask.png").is_file() for stem in rows & readable)
    done_before = len(rows & cut_out)
    assert not list(stopped.glob(".*.tmp-*"))  # no half-written file under its own name or a temporary one

    again = _carseg([*args, "--out", stopped, "--submission", stopped / "submission.csv"])
    assert f"{done_before} of {total + 3} photos are already done" in again.stdout, again.stdout + again.stderr
    _carseg([*args, "--out", full, "--submission", full / "submission.csv"])
    _same_files(stopped, full)  # no duplicate rows, no missing photo, the same files


def test_ensemble_averages_probabilities(best_ckpt, tiny_data, tmp_path):
    import torch

    from carseg.models.checkpoint import load_checkpoint, save_checkpoint

    module, size = load_checkpoint(best_ckpt)
    torch.manual_seed(1)
    with torch.no_grad():  # a second, different model: the first with noise on its decoder head
        for p in module.net.segmentation_head.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    other = save_checkpoint(module, tmp_path / "other.ckpt", image_size=size)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tiny_data / "train").glob("*.jpg"))[:4]]
    a, b = (Predictor(ckpt=c, precision="32", tta=True) for c in (best_ckpt, other))
    both = Predictor(ckpt=[best_ckpt, other], precision="32", tta=True)
    pa, pb, pab = a.probabilities(images), b.probabilities(images), both.probabilities(images)
    np.testing.assert_allclose(pab, (pa + pb) / 2, atol=1e-5)
    ma, mb, mab = a.masks(images), b.masks(images), both.masks(images)
    agree = ma == mb
    assert (mab[agree] == ma[agree]).all()  # where they agree, the ensemble says the same
    assert (mab != ma)[~agree].any() and (mab != mb)[~agree].any()  # where not, it is neither single model
    out = tmp_path / "cli"
    result = _carseg(
        [tiny_data / "train", "--ckpt", best_ckpt, "--ckpt", other, "--tta", "--precision", "32", "--out", out]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first = sorted((tiny_data / "train").glob("*.jpg"))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / f"{first.stem}_mask.png")) > 0, mab[0] > 0)


def _session(sid: int) -> dict[int, str]:
    """Live processes of session `sid`: pid → command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # session id; not a zombie
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = dict(
            line.split("=", 1)
            for line in (Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0"))
            if "=" in line
        )
    except OSError:
        return None
    return int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="processes are read from /proc")
@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_process_leaves_no_process_of_the_run(best_ckpt, kaggle_like, tmp_path, victim):
    """A node that dies: one of two processes (with their loader workers) killed outright, and within seconds
    no process of the run is left, rank 0's and rank 1's loader workers included."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "carseg.cli", "predict", str(kaggle_like), "--ckpt", str(best_ckpt)]
    command += ["--workers", "1", "--devices", "2", "--accelerator", "cpu", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 300
        while len(list(out.glob("*_cutout.png"))) < 4 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        members = _session(proc.pid)
        ranks = {pid: _rank_of(pid) for pid in members}
        rank1 = [pid for pid, rank in ranks.items() if rank == 1 and "carseg.cli" in members[pid]]
        assert proc.poll() is None and len(rank1) >= 1, members
        assert len(members) >= 4, members  # two ranks and their loader workers
        os.kill(proc.pid if victim == 0 else min(rank1), signal.SIGKILL)
        deadline = time.time() + 30
        while _session(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert _session(proc.pid) == {}, f"left alive after killing rank {victim}: {_session(proc.pid)}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if _session(proc.pid) else None
        proc.wait(30)
