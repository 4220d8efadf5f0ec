"""Cut-outs and composites: a car on a new background."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageColor

from carseg.errors import CarsegError


def alpha_matte(mask: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """float32 alpha in 0..1 from a 0/1 mask, its edge softened by a Gaussian of `feather` pixels."""
    alpha = mask.astype(np.float32)
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=feather, borderType=cv2.BORDER_REPLICATE)
    return np.clip(alpha, 0.0, 1.0)


def cutout(image: np.ndarray, mask: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """RGBA uint8: the car, transparent elsewhere."""
    alpha = (alpha_matte(mask, feather) * 255 + 0.5).astype(np.uint8)
    return np.dstack([image, alpha])


def load_background(spec: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A background of `size` (H, W): a colour name or hex (`white`, `#1e90ff`), a vertical gradient
    (`gradient:#87ceeb:#f5f0e6`, top to bottom) or an image file, fitted to cover the size (scaled, then
    centre-cropped)."""
    h, w = size
    if str(spec).startswith("gradient:"):
        parts = str(spec).split(":")[1:]
        try:
            top, bottom = (np.array(ImageColor.getrgb(c)[:3], np.float32) for c in parts)
        except ValueError as err:
            raise CarsegError(f"--background {spec!r}: write gradient:<top colour>:<bottom colour>") from err
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(np.rint(top * (1 - t) + bottom * t).astype(np.uint8), (h, w, 3)).copy()
    path = Path(str(spec))
    if path.is_file():
        try:
            with Image.open(path) as im:
                bg = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise CarsegError(f"--background {path}: cannot be read as an image ({err})") from err
        scale = max(h / bg.shape[0], w / bg.shape[1])
        resized = cv2.resize(bg, (max(w, round(bg.shape[1] * scale)), max(h, round(bg.shape[0] * scale))))
        y0, x0 = (resized.shape[0] - h) // 2, (resized.shape[1] - w) // 2
        return resized[y0 : y0 + h, x0 : x0 + w]
    try:
        colour = ImageColor.getrgb(str(spec))[:3]
    except ValueError as err:
        raise CarsegError(f"--background {spec!r}: neither an image file nor a colour (try white or #1e90ff)") from err
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def composite(image: np.ndarray, mask: np.ndarray, background: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """The car of `image` pasted on `background` (same size), RGB uint8."""
    alpha = alpha_matte(mask, feather)[..., None]
    out = image.astype(np.float32) * alpha + background.astype(np.float32) * (1 - alpha)
    return (out + 0.5).astype(np.uint8)
