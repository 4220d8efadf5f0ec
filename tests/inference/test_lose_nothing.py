"""`carseg predict` loses nothing: one output name per input, no input or foreign file written over, earlier
outputs never read as photos, every skipped file named with its true reason, no file able to stop the others,
output paths checked first, colour profiles and transparency kept."""

import hashlib
import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from carseg.data.photo import decode
from carseg.errors import CarsegError
from carseg.inference import photos as photos_module
from carseg.inference.outputs import check_outputs, is_output, output_names, row_names, unique_names
from carseg.inference.photos import PhotoDataset, read_bytes, scan_inputs


def _jpeg(path: Path, size=(96, 64), colour=(120, 60, 30), **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", **kwargs)
    return path


def bomb_png() -> bytes:
    """A few hundred bytes whose header claims 30000x30000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (30000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_no_two_inputs_share_an_output_name(tmp_path):
    files = [_jpeg(tmp_path / "a" / "car.jpg"), _jpeg(tmp_path / "b" / "car.jpg"), _jpeg(tmp_path / "a" / "solo.jpg")]
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "car.png")
    files.append(tmp_path / "a" / "car.png")
    (tmp_path / "a" / "car.JPG").write_bytes(files[0].read_bytes())
    files.append(tmp_path / "a" / "car.JPG")
    names = unique_names(files, tmp_path / "out", background="white")
    outputs = [n.casefold() for name in names for n in output_names(name, "white")]
    assert len(set(outputs)) == len(outputs)  # none shared, letter case aside
    assert names[2] == "solo" and names[3] == "car.png"  # a unique stem stays as it was
    assert names == unique_names(files, tmp_path / "out", background="white")  # the same on every run
    rows = row_names(files, names)
    assert len(set(rows)) == len(rows) and rows[2] == "solo.jpg"


def test_outputs_never_land_on_an_input_or_a_file_carseg_did_not_write(tmp_path):
    photo = _jpeg(tmp_path / "a.jpg")
    user_png = tmp_path / "a_cutout.png"  # a user's photo named like an output of a.jpg
    Image.new("RGB", (8, 8), (1, 2, 3)).save(user_png)
    found = scan_inputs([tmp_path])
    assert user_png in found.photos  # not carseg's: a photo
    names = unique_names(found.photos, tmp_path, background=None)
    written = {tmp_path / n for name in names for n in output_names(name, None)}
    assert not written & set(found.photos) and names[found.photos.index(photo)] == "a.jpg"
    foreign = tmp_path / "out" / "b_mask.png"
    foreign.parent.mkdir()
    foreign.write_bytes(b"someone else's file")
    assert unique_names([_jpeg(tmp_path / "in" / "b.jpg")], tmp_path / "out", None) == ["b.jpg"]


def test_invalid_names_bombs_links_and_unreadable_files_each_get_their_true_reason(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    good = _jpeg(folder / "good.jpg")
    latin1 = folder / os.fsdecode(b"caf\xe9.jpg")  # not UTF-8: an old camera's or a zip's name
    latin1.write_bytes(good.read_bytes())
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "scan.tif").write_bytes(b"II*\0")
    denied, broken = _jpeg(folder / "denied.jpg"), _jpeg(folder / "eio.jpg")
    real_open = open

    def fake_open(path, *args, **kwargs):  # root reads every file: simulate the refusals
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied")
        if Path(path) == broken:
            raise OSError(5, "Input/output error")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(photos_module, "open", fake_open, raising=False)
    found = scan_inputs([folder])
    assert len(found.photos) == 8  # nothing left out without a word
    items = {Path(i["path"]).name: i for i in (PhotoDataset(found.photos, range(8))[k] for k in range(8))}
    assert items["good.jpg"]["error"] is None and items[latin1.name]["error"] is None
    assert items[latin1.name]["image"].shape == (64, 96, 3)
    reasons = {k: v["error"] for k, v in items.items()}
    assert "megapixels" in reasons["bomb.png"]
    assert "symbolic link to" in reasons["dangling.jpg"] and "does not exist" in reasons["dangling.jpg"]
    assert "symbolic link loop" in reasons["loop.jpg"]
    assert "permission denied" in reasons["denied.jpg"] and "not a JPEG" not in reasons["denied.jpg"]
    assert "input/output error" in reasons["eio.jpg"] and "may be fine" in reasons["eio.jpg"]
    assert ".tif" in reasons["scan.tif"] and "convert" in reasons["scan.tif"]


def test_output_paths_are_checked_before_any_work(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(CarsegError, match="--out .*notes.txt: is a file"):
        check_outputs(notes, None)
    with pytest.raises(CarsegError, match="--out .*sub: is inside .*notes.txt, which is a file"):
        check_outputs(notes / "sub", None)
    with pytest.raises(CarsegError, match="--submission .*: is a folder"):
        check_outputs(None, tmp_path)
    with pytest.raises(CarsegError, match="nothing to write"):
        check_outputs(None, None)
    check_outputs(tmp_path / "new" / "deeper", tmp_path / "new" / "sub.csv")  # to be made: fine
    assert not (tmp_path / "new").exists()


def test_read_bytes_names_a_folder_named_like_a_photo(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(CarsegError, match="not a regular file"):
        read_bytes(fifo)


def test_transparency_and_colour_profiles_are_kept(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :30, 3] = 255  # the right half transparent
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, "PNG")
    photo = decode(buffer.getvalue(), "x.png")
    assert photo.alpha is not None and photo.alpha[:, 30:].max() == 0 and photo.alpha[:, :30].min() == 255
    from carseg.inference.background import composite, cutout

    mask = np.ones((40, 60), np.uint8)  # the model takes everything for car
    cut = cutout(photo.rgb, mask, opacity=photo.alpha)
    assert cut[:, 30:, 3].max() == 0 and cut[:, :30, 3].min() == 255  # nothing transparent made visible
    comp = composite(photo.rgb, mask, np.zeros_like(photo.rgb), opacity=photo.alpha)
    assert comp[:, 30:].max() == 0
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, "JPEG", icc_profile=icc)
    assert decode(buffer.getvalue(), "p3.jpg").icc == icc
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.paste(1, (0, 0, 5, 10))
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=1)
    decoded = decode(buffer.getvalue(), "p.png")
    assert decoded.alpha is not None and decoded.alpha[:, :5].max() == 0 and decoded.alpha[:, 5:].min() == 255


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        os.fsdecode(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.slow
def test_a_messy_folder_through_the_real_command(small_ckpt, tmp_path):
    """The data-loss classes through a real `carseg predict` process, output folder = input folder, twice."""
    folder = tmp_path / "photos"
    a = _jpeg(folder / "a.jpg", colour=(10, 10, 10))
    Image.new("RGB", (96, 64), (250, 250, 250)).save(folder / "a.png")  # the same stem
    Image.new("RGB", (96, 64), (30, 90, 200)).save(folder / "a_cutout.png")  # named like an output of a.jpg
    (folder / os.fsdecode(b"caf\xe9.jpg")).write_bytes(a.read_bytes())
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    _jpeg(folder / "tagged.jpg", icc_profile=icc)
    before = _tree_digest(folder)
    command = [sys.executable, "-m", "carseg.cli", "predict", str(folder), "--ckpt", str(small_ckpt)]
    command += ["--out", str(folder), "--quiet", "--workers", "0"]
    first = subprocess.run(command, capture_output=True, text=True, errors="replace")
    assert first.returncode != 0 and "Traceback" not in first.stderr, first.stderr  # failures: non-zero, no crash
    after = _tree_digest(folder)
    assert all(after[name] == digest for name, digest in before.items())  # no input written over
    cutouts = sorted(n for n in after if n.endswith("_cutout.png") and n != "a_cutout.png")
    assert len(cutouts) == 5, cutouts  # a.jpg, a.png, a_cutout.png, café.jpg, tagged.jpg: each its own
    assert all(is_output(folder / n) for n in cutouts)
    with Image.open(folder / "tagged_cutout.png") as im:
        assert im.info.get("icc_profile") == icc
    failures = (folder / "failures.csv").read_bytes().decode("utf-8", "replace")
    assert "bomb.png" in failures and "megapixels" in failures and "dangling.jpg" in failures
    second = subprocess.run(command, capture_output=True, text=True, errors="replace")
    assert "5 of 7 photos are already done" in second.stderr + second.stdout, second.stderr
    assert _tree_digest(folder) == after  # no earlier output read as a photo, nothing written again
    bad_out = subprocess.run([*command[:-5], "--out", str(folder / "a.jpg"), "--quiet"], capture_output=True, text=True)
    assert bad_out.returncode != 0 and "is a file" in bad_out.stderr and "Traceback" not in bad_out.stderr
