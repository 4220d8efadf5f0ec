"""The photos to predict: files and folders as a user names them, read one by one for Lightning's predict loop.
A photo that cannot be read becomes an item that says why, so that it costs no other photo its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from carseg.data.checks import is_image, is_truncated
from carseg.data.io import read_image
from carseg.errors import CarsegError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


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
    the photos `paths[i]` with i in `indices` (the input order is kept in "index")."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int]):
        self.paths, self.indices = list(paths), list(indices)

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
            return {"index": index, "path": str(path), "image": read_image(path), "error": None}
        except (CarsegError, OSError) as err:
            return {"index": index, "path": str(path), "image": None, "error": str(err)}


def as_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A DataLoader collate function that keeps a batch as its list of items (photos differ in size)."""
    return items
