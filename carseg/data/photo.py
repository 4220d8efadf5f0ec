"""A photo as a user hands it over (file bytes or an upload): checked from its header before any pixel is
decoded, then decoded with what a cut-out must keep, its colour profile and its transparency."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from carseg.errors import CarsegError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the decoders a photo may reach: the formats carseg reads, and no other (Pillow would hand PostScript to
# Ghostscript, for one)
DECODERS = ("JPEG", "PNG", "WEBP")
# bytes a complete file ends with (trailing padding after them is tolerated)
TRAILERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


class PhotoError(CarsegError):
    """A photo that cannot be used, with a short code (for HTTP answers) and the status it maps to."""

    def __init__(self, message: str, code: str = "not_an_image", status: int = 415):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Photo:
    """RGB uint8 pixels (H, W, 3), upright; the photo's own transparency (uint8 0..255, None where it has
    none) and its ICC colour profile (None: untagged, that is sRGB)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes | None = None


def open_header(data: bytes, name: str, max_megapixels: float | None) -> Image.Image:
    """The photo opened from its header alone (no pixel decoded), after every check the header allows: not
    empty, JPEG, PNG or WebP, not 0 pixels, within `max_megapixels`. `name` names it in every message."""
    if not data:
        raise PhotoError(f"{name}: empty (0 bytes); send or copy the photo again", "empty_upload", 400)
    if data[:8] == PNG_SIGNATURE and len(data) >= 24:  # PIL does not identify a PNG whose header says 0 pixels
        _refuse_no_pixels(name, *struct.unpack(">II", data[16:24]))
    try:
        with warnings.catch_warnings():  # the limit below is carseg's own
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
    except Image.DecompressionBombError:
        limit = max_megapixels if max_megapixels is not None else 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        message = f"{name}: its header claims over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels; "
        raise PhotoError(message + f"the limit is {limit:g}", "too_many_pixels", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise PhotoError(
            f"{name}: not a JPEG, PNG or WebP image (no such format recognised in its bytes: {type(err).__name__})"
        ) from None
    width, height = image.size
    _refuse_no_pixels(name, width, height)
    megapixels = width * height / 1e6
    if max_megapixels is not None and megapixels > max_megapixels:
        raise PhotoError(
            f"{name}: {width}x{height} is {megapixels:.1f} megapixels; the limit is {max_megapixels:g}",
            "too_many_pixels",
            413,
        )
    return image


def _refuse_no_pixels(name: str, width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise PhotoError(f"{name}: the image is {width}x{height} pixels", "empty_image", 400)


def is_truncated(data: bytes, fmt: str | None) -> bool:
    """Whether the bytes lack what their format ends with (cut off while being written or copied)."""
    trailer = TRAILERS.get(fmt or "")
    return trailer is not None and not data[-64:].rstrip(b"\x00").endswith(trailer)


def open_complete(data: bytes, name: str, max_megapixels: float | None) -> Image.Image:
    """`open_header`, and the bytes are whole: a truncated file (which a decoder would fill with grey and go
    on) is a PhotoError."""
    image = open_header(data, name, max_megapixels)
    if is_truncated(data, image.format):
        raise PhotoError(
            f"{name}: truncated (its last bytes are missing); copy or download it again", "corrupt_image", 400
        )
    return image


def has_transparency(image: Image.Image) -> bool:
    """Whether an opened image carries transparency: an alpha channel or a transparent palette entry."""
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def decode(data: bytes, name: str, max_megapixels: float | None = None) -> Photo:
    """The photo in `data` (JPEG, PNG or WebP), checked by `open_complete` first: upright (EXIF rotation
    applied), its transparency and colour profile kept. JPEGs go through OpenCV (libjpeg-turbo, several times
    Pillow's speed), the rest through Pillow. Errors are PhotoErrors naming `name`."""
    image = open_complete(data, name, max_megapixels)
    icc = image.info.get("icc_profile") or None
    try:
        if image.format == "JPEG":
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # EXIF rotation applied
            if bgr is None:
                raise OSError("the JPEG decoder refused it")
            return Photo(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None, icc)
        image.load()
        image = ImageOps.exif_transpose(image)
        alpha = None
        if has_transparency(image):
            rgba = image.convert("RGBA")
            alpha = np.asarray(rgba)[..., 3].copy()
            if alpha.min() == 255:
                alpha = None
            rgb = np.asarray(rgba)[..., :3].copy()
        else:
            rgb = to_rgb(image)
        return Photo(rgb, alpha, icc)
    except (OSError, SyntaxError, ValueError) as err:
        raise PhotoError(f"{name}: truncated or corrupt image data ({err})", "corrupt_image", 400) from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image in any mode Pillow opens, its levels kept: 16- and 32-bit grey scaled
    down to 8 bits (Pillow's own conversion clips them, so that a 16-bit grey photo would come out white),
    float grey clipped to 0..255, the rest through Pillow's conversion."""
    if image.mode in ("LA", "La"):
        image = image.getchannel("L")
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        grey = np.clip(grey * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))
