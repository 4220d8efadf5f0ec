"""The photos to predict: files and folders as a user names them, read one by one for Lightning's predict loop.
A photo that cannot be read becomes an item that says why, so that it costs no other photo its outputs."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from carseg.data.photo import decode, open_complete
from carseg.errors import CarsegError
from carseg.inference.outputs import is_output, looks_like_output

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}
# photos in formats carseg does not read: listed as failures (with the fix), never dropped without a word
OTHER_IMAGE_SUFFIXES = {".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".cr2", ".nef"}
# the most pixels a photo may have (its header is read first: a larger one is listed, never decoded)
MAX_MEGAPIXELS = 100.0


def shown(path: str | Path) -> str:
    """A path as text that prints anywhere: bytes that are not UTF-8 (an old camera's or a zip's name) as �."""
    return os.fsencode(path).decode("utf-8", "replace")


@dataclass
class Inputs:
    """What a list of files and folders holds: the photos to predict (some may turn out unreadable), the
    outputs of earlier runs found in the folders (never read as photos) and the count of other files."""

    photos: list[Path] = field(default_factory=list)
    earlier_outputs: list[Path] = field(default_factory=list)
    other_files: int = 0


def _folder(item: Path, found: Inputs) -> None:
    try:
        entries = sorted(os.scandir(item), key=lambda e: e.name)
    except OSError as err:
        raise CarsegError(f"{shown(item)}: the folder cannot be read ({err.strerror}); check its permissions") from err
    before = len(found.photos)
    for entry in entries:
        path = Path(entry.path)
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | OTHER_IMAGE_SUFFIXES:
            found.other_files += 1
            continue
        try:
            if entry.is_dir():  # a folder named like a photo; symbolic links are followed
                found.other_files += 1
                continue
        except OSError:  # a symbolic link loop: listed below with its reason
            pass
        if looks_like_output(path) and is_output(path):
            found.earlier_outputs.append(path)
            continue
        found.photos.append(path)  # dangling links, loops and unreadable files too: each is told why
    if len(found.photos) == before and not found.earlier_outputs:
        raise CarsegError(f"{shown(item)}: no JPEG, PNG or WebP photos in this folder")


def scan_inputs(inputs: Sequence[str | Path]) -> Inputs:
    """Photos named directly or found in folders (JPEG/PNG/WebP, sorted by name; folders are not searched
    below their first level), each once. A name that does not exist is an error; a photo that exists but
    cannot be read is kept, to be listed with its reason."""
    found = Inputs()
    for item in map(Path, inputs):
        if item.is_dir():
            _folder(item, found)
        elif os.path.lexists(item):
            if item.suffix.lower() not in IMAGE_SUFFIXES | OTHER_IMAGE_SUFFIXES:
                raise CarsegError(f"{shown(item)}: not a photo's name; pass photos of cars (.jpg, .jpeg, .png, .webp)")
            found.photos.append(item)
        else:
            raise CarsegError(f"{shown(item)}: no such file or folder")
    seen: set[str] = set()
    unique = []
    for path in found.photos:  # a photo named twice (as a file and inside its folder) is predicted once
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    found.photos = unique
    return found


def read_bytes(path: Path) -> bytes:
    """A photo's bytes, or a CarsegError that says truly why they cannot be had: a dangling symbolic link, a
    link loop, not a regular file, no permission, an input/output error."""
    name = shown(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CarsegError(f"{name}: a symbolic link to {shown(os.readlink(path))}, which does not exist") from None
        raise CarsegError(f"{name}: no longer exists (moved or deleted during the run)") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CarsegError(f"{name}: a symbolic link loop (the link leads back to itself); fix the link") from None
        raise CarsegError(f"{name}: cannot be read ({err.strerror}); the file may be fine, check the disk") from None
    if not stat.S_ISREG(info.st_mode):
        raise CarsegError(f"{name}: not a regular file (a device, pipe or socket); pass photo files")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except PermissionError:
        raise CarsegError(
            f"{name}: permission denied (the photo may be fine); make it readable (chmod +r) or run as its owner"
        ) from None
    except OSError as err:
        raise CarsegError(
            f"{name}: cannot be read, input/output error ({err.strerror}); the photo may be fine, check the disk "
            "and copy it again"
        ) from None


def check_format(path: Path) -> None:
    """A photo in a format carseg does not read is named with the fix."""
    if path.suffix.lower() in OTHER_IMAGE_SUFFIXES:
        raise CarsegError(f"{shown(path)}: a {path.suffix} file; carseg reads JPEG, PNG and WebP: convert it")


class PhotoDataset(Dataset):
    """Items {"index", "path", "image" (RGB uint8, or None), "opacity" (the photo's own alpha, or None), "icc"
    (its colour profile, or None), "error" (None, or why it could not be read)} for the photos `paths[i]` with
    i in `indices` (the input order is kept in "index"). With `raw_jpeg` a JPEG's item holds its checked bytes
    ("data", a uint8 tensor) instead of its pixels, for `decode_jpegs` to decode where the model runs (on a
    GPU: nvJPEG)."""

    def __init__(
        self,
        paths: Sequence[Path],
        indices: Sequence[int],
        raw_jpeg: bool = False,
        max_megapixels: float = MAX_MEGAPIXELS,
    ):
        self.paths, self.indices, self.raw_jpeg = list(paths), list(indices), raw_jpeg
        self.max_megapixels = max_megapixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        path = self.paths[index]
        item: dict[str, Any] = {"index": index, "path": str(path), "image": None, "opacity": None, "icc": None}
        try:
            check_format(path)
            data = read_bytes(path)
            name = shown(path)
            if self.raw_jpeg:
                header = open_complete(data, name, self.max_megapixels)  # the checks `decode` makes
                if header.format == "JPEG":
                    item["icc"] = header.info.get("icc_profile") or None
                    item["data"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                    return {**item, "error": None}
            photo = decode(data, name, self.max_megapixels)
            item.update(image=photo.rgb, opacity=photo.alpha, icc=photo.icc)
            return {**item, "error": None}
        except CarsegError as err:
            return {**item, "error": str(err)}
        except Exception as err:  # noqa: BLE001 - whatever one file does, the others go on
            return {**item, "error": f"{shown(path)}: cannot be decoded ({type(err).__name__}: {err})"}


def as_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A DataLoader collate function that keeps a batch as its list of items (photos differ in size)."""
    return items


def decode_jpegs(items: list[dict[str, Any]], device: torch.device | str) -> None:
    """Decode, in place, the items that hold a JPEG's bytes: all at once on `device` (nvJPEG on a GPU,
    libjpeg-turbo on a CPU); a photo that fails there is decoded on the CPU, and one that no decoder reads
    becomes an item that says why. Each item ends with "image" (RGB uint8 on the host) or "error"."""
    from torchvision.io import ImageReadMode, decode_jpeg

    todo = [item for item in items if item.get("data") is not None and item["error"] is None]
    if not todo:
        return
    try:
        decoded: list[torch.Tensor | None] = list(
            decode_jpeg([item["data"] for item in todo], mode=ImageReadMode.RGB, device=device)
        )
    except RuntimeError:  # one bad photo fails the whole batch: decode each on its own below
        decoded = [None] * len(todo)
    for item, image in zip(todo, decoded, strict=True):
        data, item["data"] = item["data"], None
        if image is not None:
            item["image"] = image.permute(1, 2, 0).cpu().numpy()
            continue
        try:
            item["image"] = decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
        except RuntimeError:
            try:  # OpenCV reads what libjpeg-turbo's strict decoder refuses (CMYK, odd markers)
                item["image"] = decode(data.numpy().tobytes(), shown(item["path"])).rgb
            except CarsegError as err:
                item["error"] = f"{shown(item['path'])}: cannot be decoded as a JPEG ({err})"
