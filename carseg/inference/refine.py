"""Boundary refinement at full resolution: the learned edge refiner (`refine_edges`, the network of
`carseg.models.refiner`, run on the tiles along the edge), or a guided filter that steers the upsampled
mask to the photo's edges.

He, Sun and Tang's guided filter (gray guide), from OpenCV box filters: opencv-contrib's
`ximgproc.guidedFilter` would clash with the opencv-python-headless build that albumentations needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from carseg.masks import edge_band


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of `src` (H, W float32) along the edges of `guide` (H, W float32, 0..1)."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    a = (box(guide * src) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def refine_probabilities(image: np.ndarray, probs: np.ndarray, radius: int = 4, eps: float = 1e-2) -> np.ndarray:
    """Car probabilities (H, W) refined along the edges of the RGB uint8 `image` (H, W, 3), clipped to 0..1."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    return np.clip(guided_filter(gray, probs.astype(np.float32), radius, eps), 0.0, 1.0)


# (photos uint8-range (B, 3, S, S), coarse probabilities (B, 1, S, S)) on the CPU -> float logits (B, 1, S, S)
TileRefiner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def torch_refiner(net: torch.nn.Module, autocast: Callable[[], Any] = nullcontext) -> TileRefiner:
    """An EdgeRefiner as a TileRefiner: run on its own device, in inference mode, under `autocast`."""
    device = next(net.parameters()).device

    def run(photos: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return net(photos.to(device), coarse.to(device)).float().cpu()

    return run


def refine_edges(
    refiner: TileRefiner | torch.nn.Module,
    images: Sequence[np.ndarray],
    logits: torch.Tensor,
    band: int,
    threshold: float = 0.0,
    tile: int = 128,
    margin: int = 32,
    batch_size: int = 16,
    autocast: Callable[[], Any] = nullcontext,
    flip: bool = False,
) -> torch.Tensor:
    """Logits (N, H, W) with the band of `band` pixels around each mask's edge (logit > `threshold`) replaced
    by the edge refiner's, at full size. The refiner (an EdgeRefiner, or any TileRefiner such as the ONNX
    one) sees tiles of `tile` pixels that touch the band, each with `margin` pixels of context; elsewhere
    the logits are kept. With `flip` (flip TTA for the edge) it also refines each tile's mirror image, in the
    same batch, and the two answers' logits are averaged."""
    run = torch_refiner(refiner, autocast) if isinstance(refiner, torch.nn.Module) else refiner
    if flip:
        run = _flip_averaged(run)
    size = tile + 2 * margin
    out = logits.clone()
    for n, image in enumerate(images):
        h, w = image.shape[:2]
        region = edge_band((logits[n] > threshold).numpy(), band)
        if not region.any():
            continue
        ph, pw = -(-max(h, size) // 8) * 8, -(-max(w, size) // 8) * 8
        photo = torch.from_numpy(np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")).permute(2, 0, 1)
        probs = F.pad(torch.sigmoid(logits[n] - threshold)[None, None], (0, pw - w, 0, ph - h), mode="replicate")[0]
        tiles = [
            (y, x) for y in range(0, h, tile) for x in range(0, w, tile) if region[y : y + tile, x : x + tile].any()
        ]
        refined = logits[n].clone()
        for i in range(0, len(tiles), batch_size):
            chunk = tiles[i : i + batch_size]
            corners = [(min(max(y - margin, 0), ph - size), min(max(x - margin, 0), pw - size)) for y, x in chunk]
            photos = torch.stack([photo[:, y0 : y0 + size, x0 : x0 + size] for y0, x0 in corners])
            coarse = torch.stack([probs[:, y0 : y0 + size, x0 : x0 + size] for y0, x0 in corners])
            result = run(photos, coarse)[:, 0] + threshold
            for (y, x), (y0, x0), r in zip(chunk, corners, result, strict=True):
                th, tw = min(tile, h - y), min(tile, w - x)
                refined[y : y + th, x : x + tw] = r[y - y0 : y - y0 + th, x - x0 : x - x0 + tw]
        out[n] = torch.where(torch.from_numpy(region), refined, logits[n])
    return out


def _flip_averaged(run: TileRefiner) -> TileRefiner:
    """`run` with flip TTA: each tile and its mirror image in one batch, the two answers' logits averaged."""

    def both(photos: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        n = photos.shape[0]
        out = run(torch.cat([photos, photos.flip(-1)]), torch.cat([coarse, coarse.flip(-1)]))
        return (out[:n] + out[n:].flip(-1)) / 2

    return both
