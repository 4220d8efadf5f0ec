"""Cut-outs and composites: a car on a new background."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageColor

from carseg.errors import CarsegError


def alpha_matte(
    mask: np.ndarray, feather: float = 0.0, alpha: np.ndarray | None = None, opacity: np.ndarray | None = None
) -> np.ndarray:
    """float32 alpha in 0..1: the model's `alpha` (its probabilities) where given, else the 0/1 mask; its edge
    softened by a Gaussian of `feather` pixels; times the photo's own `opacity` (uint8 0..255) where it has
    one, so that nothing the photo had transparent becomes visible."""
    alpha = (mask if alpha is None else alpha).astype(np.float32)  # a copy: the caller's stays as it was
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=feather, borderType=cv2.BORDER_REPLICATE)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    if opacity is not None:
        alpha *= opacity.astype(np.float32) * (1.0 / 255.0)
    return alpha


def cutout(
    image: np.ndarray,
    mask: np.ndarray,
    feather: float = 0.0,
    alpha: np.ndarray | None = None,
    opacity: np.ndarray | None = None,
) -> np.ndarray:
    """RGBA uint8: the car, transparent elsewhere (alpha: `alpha_matte`)."""
    matte = alpha_matte(mask, feather, alpha, opacity)
    out = np.empty((*mask.shape, 4), np.uint8)
    out[..., :3] = image
    matte *= 255  # in place: no more float copies of a photo's size
    matte += 0.5
    out[..., 3] = matte
    return out


def colour_background(spec: str, size: tuple[int, int]) -> np.ndarray:
    """A background of `size` (H, W) from text alone: a colour name or hex (`white`, `#1e90ff`) or a vertical
    gradient (`gradient:#87ceeb:#f5f0e6`, top to bottom). It never opens a file, whatever `spec` says."""
    h, w = size
    spec = str(spec)
    shown = spec if len(spec) <= 60 else spec[:57] + "..."
    if spec.startswith("gradient:"):
        parts = spec.split(":")[1:]
        try:
            if len(parts) != 2:
                raise ValueError(spec)
            top, bottom = (np.array(ImageColor.getrgb(c)[:3], np.float32) for c in parts)
        except ValueError as err:
            raise CarsegError(f"background {shown!r}: write gradient:<top colour>:<bottom colour>") from err
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(np.rint(top * (1 - t) + bottom * t).astype(np.uint8), (h, w, 3)).copy()
    try:
        colour = ImageColor.getrgb(spec)[:3]
    except ValueError as err:
        raise CarsegError(f"background {shown!r}: not a colour (try white or #1e90ff) or a gradient") from err
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def load_background(spec: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A background of `size` (H, W): an image file, fitted to cover the size (scaled, then centre-cropped),
    or else a colour or gradient (`colour_background`). For local use (the command line): it opens the file
    `spec` names."""
    path = Path(str(spec))
    try:
        is_file = path.is_file()
    except OSError:  # a name too long for the file system, ...: not a file
        is_file = False
    if is_file:
        try:
            with Image.open(path) as im:
                bg = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise CarsegError(f"background {path}: cannot be read as an image ({err})") from err
        return fit_background(bg, size)
    try:
        return colour_background(str(spec), size)
    except CarsegError as err:
        raise CarsegError(f"{err}; nor is it an image file") from None


def contact_shadow(mask: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """How much to darken the new background (float32, 0..`strength`): a soft shadow where the car meets the
    ground, a band around the lowest car pixel of each column, widened and blurred in proportion to the car."""
    rows, cols = np.nonzero(mask)
    shadow = np.zeros(mask.shape, np.float32)
    if strength <= 0 or rows.size == 0:
        return shadow
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    columns = np.flatnonzero(mask.any(axis=0))
    bottom = mask.shape[0] - 1 - np.argmax(mask[::-1, columns], axis=0)
    y = np.arange(mask.shape[0])[:, None]
    footprint = (y >= bottom - 0.02 * height) & (y <= bottom + 0.05 * height)
    shadow[:, columns] = footprint.astype(np.float32)
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigmaX=max(1.0, 0.03 * width), sigmaY=max(1.0, 0.03 * height))
    return np.clip(shadow / max(float(shadow.max()), 1e-6), 0.0, 1.0) * min(float(strength), 1.0)


def fit_background(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB picture centre-cropped to the shape of `size` (H, W), then scaled to it: the same as scaling
    to cover and cropping, without ever holding more than the picture and the result (a 1×1000 picture
    behind a 480×320 photo is never scaled to 480×480,000)."""
    h, w = size
    ph, pw = picture.shape[:2]
    # the largest centred window of the picture with the photo's aspect
    ch, cw = (ph, max(1, min(pw, round(ph * w / h)))) if pw * h >= ph * w else (max(1, min(ph, round(pw * h / w))), pw)
    y0, x0 = (ph - ch) // 2, (pw - cw) // 2
    window = np.ascontiguousarray(picture[y0 : y0 + ch, x0 : x0 + cw])
    if window.shape[:2] == (h, w):
        return window
    shrink = ch > h and cw > w
    return cv2.resize(window, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def composite(
    image: np.ndarray,
    mask: np.ndarray,
    background: np.ndarray,
    feather: float = 0.0,
    shadow: float = 0.0,
    alpha: np.ndarray | None = None,
    opacity: np.ndarray | None = None,
) -> np.ndarray:
    """The car of `image` pasted on `background` (same size), RGB uint8, through `alpha_matte`; `shadow`
    (0..1) darkens the ground under the car by that much at most (`contact_shadow`)."""
    alpha = alpha_matte(mask, feather, alpha, opacity)[..., None]
    ground = background.astype(np.float32)
    if shadow > 0:
        ground *= 1.0 - contact_shadow(mask.astype(bool), shadow)[..., None]
    out = image.astype(np.float32) * alpha + ground * (1 - alpha)
    return (out + 0.5).astype(np.uint8)
