"""The photos to predict: files and folders as a user names them, read one by one for Lightning's predict loop.
A photo that cannot be read becomes an item that says why, so that it costs no other photo its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from carseg.data.checks import is_image, is_truncated
from carseg.data.io import read_image
from carseg.errors import CarsegError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}


def list_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found in folders (JPEG/PNG, sorted); anything else is an error."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            try:
                found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError as err:
                raise CarsegError(f"{item}: the folder cannot be read ({err.strerror})") from err
            if not found:
                raise CarsegError(f"{item}: no JPEG or PNG files in this folder")
            files += found
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise CarsegError(f"{item}: not a JPEG or PNG file; pass photos of cars (.jpg, .jpeg, .png)")
            files.append(item)
        else:
            raise CarsegError(f"{item}: no such file or folder")
    return files


class PhotoDataset(Dataset):
    """Items {"index", "path", "image" (RGB uint8, or None), "error" (None, or why it could not be read)} for
    the photos `paths[i]` with i in `indices` (the input order is kept in "index"). With `raw_jpeg` a JPEG's
    item holds its checked bytes ("data", a uint8 tensor) instead of its pixels, for `decode_jpegs` to decode
    where the model runs (on a GPU: nvJPEG)."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int], raw_jpeg: bool = False):
        self.paths, self.indices, self.raw_jpeg = list(paths), list(indices), raw_jpeg

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        path = self.paths[index]
        try:
            if not is_image(path):
                raise CarsegError(f"{path}: not a JPEG or PNG photo (no image format recognised in its bytes)")
            if is_truncated(path):  # a decoder would fill the missing part with grey and go on
                raise CarsegError(f"{path}: truncated (its last bytes are missing); copy or download it again")
            if self.raw_jpeg and path.suffix.lower() in JPEG_SUFFIXES:
                data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
                return {"index": index, "path": str(path), "image": None, "data": data, "error": None}
            return {"index": index, "path": str(path), "image": read_image(path), "error": None}
        except (CarsegError, OSError) as err:
            return {"index": index, "path": str(path), "image": None, "error": str(err)}


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
                item["image"] = read_image(Path(item["path"]))
            except (CarsegError, OSError) as err:
                item["error"] = f"{item['path']}: cannot be decoded as a JPEG ({err})"
