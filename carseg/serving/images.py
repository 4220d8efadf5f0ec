"""Photos in and pictures out over HTTP: uploads checked before they are decoded, results encoded."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from carseg.data.photo import Photo, PhotoError, decode, open_header

FORMATS = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# the largest side each encoder writes
MAX_SIDE = {"JPEG": 65535, "WEBP": 16383, "PNG": 2**31 - 1}


@dataclass
class UploadError(Exception):
    """A request the server refuses: HTTP status, a short machine-readable code and a message for people."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return self.message


def open_photo(data: bytes, field: str, max_megapixels: float) -> Image.Image:
    """An uploaded JPEG, PNG or WebP opened from its header alone (no pixel decoded), after every check the
    header allows (`carseg.data.photo.open_header`). Cheap, so that a bad upload is refused before it takes a
    place in the queue."""
    try:
        return open_header(data, f"field {field!r}", max_megapixels)
    except PhotoError as err:
        raise UploadError(err.status, err.code, str(err)) from None


def decode_photo(data: bytes, field: str, max_megapixels: float) -> Photo:
    """An uploaded JPEG, PNG or WebP, upright, with its transparency and colour profile
    (`carseg.data.photo.decode`); the header is checked first, so an oversized photo is refused before any
    pixel is decoded."""
    try:
        return decode(data, f"field {field!r}", max_megapixels)
    except PhotoError as err:
        raise UploadError(err.status, err.code, str(err)) from None


def encode(picture: np.ndarray, fmt: str, quality: int = 95, icc: bytes | None = None) -> tuple[bytes, str]:
    """PNG, JPEG or WebP bytes of an RGB, RGBA or grey uint8 array, and the content type; `icc`, the photo's
    colour profile, is embedded in colour pictures. JPEG has no alpha: an RGBA picture is flattened on
    white."""
    if fmt not in FORMATS:
        raise UploadError(400, "bad_format", f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    name, content_type = FORMATS[fmt]
    if max(picture.shape[:2]) > MAX_SIDE[name]:
        h, w = picture.shape[:2]
        raise UploadError(
            400,
            "too_large_for_format",
            f"format {fmt!r}: the result is {w}x{h} pixels and {fmt} holds at most {MAX_SIDE[name]} a side; "
            "ask for png, or a smaller size",
        )
    if name == "JPEG" and picture.ndim == 3 and picture.shape[2] == 4:
        alpha = picture[..., 3:].astype(np.float32) / 255
        picture = (picture[..., :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    options: dict = {"quality": quality} if name in ("JPEG", "WEBP") else {"compress_level": 1}
    if icc and picture.ndim == 3:
        options["icc_profile"] = icc
    Image.fromarray(picture).save(buffer, name, **options)
    return buffer.getvalue(), content_type
