"""Photos in and pictures out over HTTP: uploads checked before they are decoded, results encoded."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMATS = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# the decoders an upload may reach: the formats the service claims, and no other (Pillow would hand
# PostScript to Ghostscript, for one)
DECODERS = ("JPEG", "PNG", "WEBP")
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


def _refuse_no_pixels(field: str, width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise UploadError(400, "empty_image", f"field {field!r}: the image is {width}x{height} pixels")


def open_photo(data: bytes, field: str, max_megapixels: float) -> Image.Image:
    """An uploaded JPEG, PNG or WebP opened from its header alone (no pixel decoded), after every check the
    header allows: not empty, one of the claimed formats, not 0 pixels, within `max_megapixels`. Cheap, so
    that a bad upload is refused before it takes a place in the queue."""
    if not data:
        raise UploadError(400, "empty_upload", f"field {field!r} is empty: send the photo's bytes")
    if data[:8] == PNG_SIGNATURE and len(data) >= 24:  # PIL does not identify a PNG whose header says 0 pixels
        _refuse_no_pixels(field, *struct.unpack(">II", data[16:24]))
    try:
        with warnings.catch_warnings():  # the limit below is the server's own
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        message = f"field {field!r}: over {limit:.0f} megapixels; the limit is {max_megapixels:g}"
        raise UploadError(413, "too_many_pixels", message) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UploadError(
            415, "not_an_image", f"field {field!r} is not a JPEG, PNG or WebP image ({type(err).__name__})"
        ) from None
    width, height = image.size
    _refuse_no_pixels(field, width, height)
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise UploadError(
            413,
            "too_many_pixels",
            f"field {field!r}: {width}x{height} is {megapixels:.1f} megapixels; the limit is {max_megapixels:g}",
        )
    return image


def decode_photo(data: bytes, field: str, max_megapixels: float) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an uploaded JPEG, PNG or WebP, EXIF rotation applied; the header is checked
    first (`open_photo`), so an oversized photo is refused before any pixel is decoded."""
    image = open_photo(data, field, max_megapixels)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(400, "corrupt_image", f"field {field!r}: truncated or corrupt image data ({err})") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image in any mode Pillow opens, its levels kept: 16- and 32-bit grey scaled
    down to 8 bits (Pillow's own conversion clips them, so that a 16-bit grey photo would come out white),
    float grey clipped to 0..255, the rest through Pillow's conversion."""
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        grey = np.clip(grey * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def encode(picture: np.ndarray, fmt: str, quality: int = 95) -> tuple[bytes, str]:
    """PNG, JPEG or WebP bytes of an RGB, RGBA or grey uint8 array, and the content type. JPEG has no alpha:
    an RGBA picture is flattened on white."""
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
    options = {"quality": quality} if name in ("JPEG", "WEBP") else {"compress_level": 1}
    Image.fromarray(picture).save(buffer, name, **options)
    return buffer.getvalue(), content_type
