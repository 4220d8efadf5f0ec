"""Full-resolution masks from a checkpoint (PyTorch) or an exported ONNX model."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carseg import console
from carseg.errors import CarsegError
from carseg.extras import require
from carseg.hardware import autocast, emulated_bf16, emulated_bf16_message, inference_precision
from carseg.inference.refine import TileRefiner, refine_edges, refine_probabilities
from carseg.masks import edge_band
from carseg.models.checkpoint import load_checkpoint, load_quality, load_refiner
from carseg.models.full_size import full_size_logits
from carseg.models.module import SegmentationModule, threshold_logit
from carseg.models.padding import DEFAULT_MULTIPLE, pad_to_multiple
from carseg.models.quality import REVIEW_BELOW, QualityModel, raw_score
from carseg.models.quality import features as quality_features

# pixels on either side of the mask's edge where a cut-out's alpha is the model's probability
MATTE_BAND = 4


class Predictor:
    """Probabilities of "car" for images of any size, returned at each image's own resolution.

    Images are resized to the model's training size (`input_size`, read from the checkpoint) when it is
    set, else run at native size; either way padded by the model's padding rule (`carseg.models.padding`,
    recorded in ONNX metadata) and cropped back; logits are upsampled back to each image's size.
    `compile`: torch.compile's mode for the network ("default", "max-autotune", "reduce-overhead": CUDA
    graphs), True for "default", False or "off" for eager; "auto" compiles (default mode) on a GPU, where
    `carseg bench infer --device cuda` measured it fastest among the paths whose masks agree with fp32, and
    stays eager on a CPU. A network that fails to compile runs eagerly, with one warning.
    `tta` averages with the horizontally flipped image. A checkpoint that carries an edge refiner (trained
    by `refiner=edge`) has it place the edges at full size (`edge_refiner=False`: not); `edge_tta` averages
    its answers for each edge tile and the tile's mirror image (None: with `tta`). `refine_radius` > 0
    refines the upsampled probabilities along the photo's edges with a guided filter of that radius
    (pixels at full size).
    Several checkpoints (`ckpt` a list, e.g. the folds of a cross-validation) predict as an ensemble: their
    full-resolution probabilities are averaged, each model seeing the images at its own training size.
    """

    def __init__(
        self,
        ckpt: str | Path | Sequence[str | Path] | None = None,
        onnx: str | Path | None = None,
        input_size: Sequence[int] | str | None = "train",
        tta: bool = False,
        precision: str = "auto",
        channels_last: bool = True,
        device: str | None = None,
        threads: int | None = None,
        compile: bool | str = "auto",
        refine_radius: int = 0,
        refine_eps: float = 1e-2,
        edge_refiner: bool = True,
        edge_tta: bool | None = None,
    ):
        if edge_tta not in (None, True, False):
            raise CarsegError(f"edge_tta={edge_tta!r}: use true, false or null (null: as tta)")
        if refine_radius < 0 or refine_eps <= 0:
            raise CarsegError(f"refine_radius={refine_radius}, refine_eps={refine_eps}: need radius >= 0, eps > 0")
        self.refine_radius, self.refine_eps = int(refine_radius), float(refine_eps)
        if (ckpt is None) == (onnx is None):
            raise CarsegError("give exactly one of a checkpoint or an ONNX model to predict with")
        self.tta = tta
        # flip TTA for the edge refiner too (None: as `tta`)
        self.edge_tta = bool(tta) if edge_tta is None else edge_tta
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.session = None
        self.module: SegmentationModule | None = None
        self.pad_multiple = 1
        # (model, the size it sees images at): one per checkpoint, or (None, size) for the ONNX model
        self.members: list[tuple[SegmentationModule | None, Sequence[int] | None]] = []
        # the first checkpoint's (or the ONNX model's) edge refiner and its band, when it has one and
        # edge_refiner is on
        self.refiner: tuple[torch.nn.Module | TileRefiner, int] | None = None
        # the calibration of the quality score (None: the raw score)
        self.quality_model: QualityModel | None = None
        if ckpt is not None:
            paths = [ckpt] if isinstance(ckpt, str | Path) else list(ckpt)
            if not paths:
                raise CarsegError("no checkpoint given: name one (or several, an ensemble)")
            thresholds = set()
            for path in paths:
                module, trained_size = load_checkpoint(path, map_location=str(self.device))
                module.eval()
                if channels_last:
                    module.net.to(memory_format=torch.channels_last)
                module.hparams.channels_last = channels_last
                mode = compile_mode(compile, self.device)
                if mode is not None:
                    module.net = EagerFallback(module.net, mode)
                thresholds.add(float(module.hparams.get("threshold", 0.5)))
                self.members.append((module, trained_size if input_size == "train" else input_size))
            if len(thresholds) > 1:
                raise CarsegError(f"the ensemble's checkpoints use different thresholds {sorted(thresholds)}: use one")
            self.module, self.threshold = self.members[0][0], thresholds.pop()
            self.quality_model = load_quality(paths[0])
            if edge_refiner:
                self.refiner = load_refiner(paths[0], map_location=str(self.device))
                if self.refiner is not None and channels_last:
                    self.refiner[0].to(memory_format=torch.channels_last)
        else:
            self.session, self.threshold, trained_size, self.pad_multiple = _onnx_session(Path(onnx), threads)
            self.members.append((None, trained_size if input_size == "train" else input_size))
            if edge_refiner:
                self.refiner = _onnx_refiner(Path(onnx), self.session, threads)
        self.input_size = self.members[0][1]
        # the cut-out alpha's sharpness, fitted with the edge refiner (1.0: the probability itself)
        self.alpha_sharpness = float(getattr(self.refiner[0], "alpha_sharpness", 1.0)) if self.refiner else 1.0
        # wall seconds spent in `logits` and the images it saw: the prediction time per photo
        self.seconds, self.images = 0.0, 0
        self.precision = inference_precision(precision, self.device) if self.module is not None else "32"
        if emulated_bf16(self.precision, self.device.type == "cuda"):
            console.warning(emulated_bf16_message(f"precision={precision}", "precision=auto (--precision auto)"))

    def _autocast(self) -> Any:
        return autocast(self.precision, self.device)

    def _logits(self, batch: torch.Tensor, module: SegmentationModule | None = None) -> torch.Tensor:
        """Logits (N, 1, h, w) of `module` (None: the ONNX model) for a float batch in 0..255."""
        if module is not None:
            with torch.inference_mode(), self._autocast():
                return module(batch.to(self.device)).float().cpu()
        h, w = batch.shape[-2:]
        x = pad_to_multiple(batch, self.pad_multiple)
        out = self.session.run(None, {"image": x.numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)[..., :h, :w]

    def logits(self, images: Sequence[np.ndarray], parts: dict[str, Any] | None = None) -> torch.Tensor:
        """Logits at full resolution for a list of same-size RGB uint8 images (N, H, W, 3). With `parts` (a
        dict) also what the quality score reads: "disagreement" (per image, pixels where the photo's and its
        mirror's masks differ), "shift" (how far their probabilities differ, summed) and "coarse" (the masks
        before the edge refiner, when there is one)."""
        start = time.perf_counter()
        out = self._full_logits(images, parts)
        self.seconds += time.perf_counter() - start
        self.images += len(images)
        return out

    def _full_logits(self, images: Sequence[np.ndarray], parts: dict[str, Any] | None = None) -> torch.Tensor:
        batch = images[0][None] if len(images) == 1 else np.stack(images)  # no copy of a lone photo
        with warnings.catch_warnings():  # a decoded photo may be read-only; nothing here writes to it
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            full = torch.from_numpy(batch).permute(0, 3, 1, 2)  # uint8: resized before it becomes float
        threshold = threshold_logit(self.threshold)
        disagreement = parts.setdefault("disagreement", []) if parts is not None else None
        shift = parts.setdefault("shift", []) if parts is not None else None
        outs = [
            full_size_logits(
                lambda x, m=module: self._logits(x, m),
                full,
                input_size,
                self.tta,
                disagreement if i == 0 else None,  # the first member's: the ensemble's would need all of them
                threshold,
                shift if i == 0 else None,
            )
            for i, (module, input_size) in enumerate(self.members)
        ]
        if len(outs) > 1:  # an ensemble averages probabilities (as logits again, for one threshold rule)
            outs = [torch.logit(torch.stack([o.sigmoid() for o in outs]).mean(0), eps=1e-6)]
        out = outs[0][:, 0]
        if self.refiner is not None:
            net, band = self.refiner
            if parts is not None:
                parts["coarse"] = (out > threshold).numpy()
            out = refine_edges(net, images, out, band, threshold, autocast=self._autocast, flip=self.edge_tta)
        if self.refine_radius:
            probs = [
                refine_probabilities(im, p, self.refine_radius, self.refine_eps)
                for im, p in zip(images, torch.sigmoid(out).numpy(), strict=True)
            ]
            out = torch.logit(torch.from_numpy(np.stack(probs)), eps=1e-6)
        return out

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return torch.sigmoid(self.logits(images)).numpy()

    def masks(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Binary masks (N, H, W) uint8 0/1."""
        return (self.logits(images) > threshold_logit(self.threshold)).numpy().astype(np.uint8)

    def mattes(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(mask, alpha) of each image: the binary mask (H, W) uint8 0/1 and the alpha matte (H, W) float32
        0..1. Within MATTE_BAND pixels of the mask's edge the alpha is the model's own probability at full
        size (after refinement), shifted so that 0.5 is the mask's threshold and sharpened by the edge
        refiner's fitted `alpha_sharpness` (1 without a refiner); elsewhere it is the mask, so a
        model's faint doubts far from the car leave no veil over the new background."""
        return [(mask, alpha) for mask, alpha, _ in self._mattes(images, None)]

    def assess(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
        """(mask, alpha, quality) of each image, as `mattes` with the label-free quality of each cut-out:
        {"score", "calibrated", "target", and the signals of `carseg.models.quality.FEATURES`}. The mirror
        image is predicted for it also without TTA."""
        parts: dict[str, Any] = {}
        return self._mattes(images, parts)

    def _mattes(
        self, images: Sequence[np.ndarray], parts: dict[str, Any] | None
    ) -> list[tuple[np.ndarray, np.ndarray, dict[str, Any] | None]]:
        out, threshold = self.logits(images, parts), threshold_logit(self.threshold)
        # in place (one photo of floats less), unless the network's own output (inference mode: read-only)
        shifted = out - threshold if out.is_inference() else out.sub_(threshold)
        masks = (shifted > 0).numpy().view(np.uint8)
        qualities: list[dict[str, Any] | None] = [None] * len(images)
        if parts is not None:
            probs = torch.sigmoid(shifted).numpy()
            coarse = parts.get("coarse")
            for n, prob in enumerate(probs):
                signals = quality_features(
                    prob,
                    parts["disagreement"][n],
                    None if coarse is None else coarse[n],
                    images[n],
                    parts["shift"][n],
                )
                qualities[n] = self._quality(signals)
        probs = shifted.mul_(self.alpha_sharpness).sigmoid_().numpy()  # `shifted` is this function's own now
        return [
            (mask, edge_matte(mask, prob, overwrite=True), quality)
            for mask, prob, quality in zip(masks, probs, qualities, strict=True)
        ]

    def _quality(self, signals: dict[str, float]) -> dict[str, Any]:
        if self.quality_model is not None:
            score, target = self.quality_model.predict(signals), self.quality_model.target
            below = self.quality_model.review_below()
        else:
            score, target, below = raw_score(signals), "raw", REVIEW_BELOW["raw"]
        return {
            "score": round(score, 4),
            "calibrated": self.quality_model is not None,
            "target": target,
            "review": bool(score < below),
            **signals,
        }

    def batched(self, items: Iterable[tuple[Any, np.ndarray]], batch_size: int = 4) -> Iterator[tuple[Any, np.ndarray]]:
        """(key, image) pairs in → (key, mask) pairs out, batching consecutive images of the same size.

        A full batch is predicted before the next image is asked for, and when reading the next image
        fails, the images already read are predicted before the error goes on."""
        return self._batched(items, batch_size, self.masks)

    def batched_mattes(
        self, items: Iterable[tuple[Any, np.ndarray]], batch_size: int = 4
    ) -> Iterator[tuple[Any, tuple[np.ndarray, np.ndarray]]]:
        """As `batched`, with (mask, alpha) pairs (`mattes`) in place of masks."""
        return self._batched(items, batch_size, self.mattes)

    def batched_assess(
        self, items: Iterable[tuple[Any, np.ndarray]], batch_size: int = 4
    ) -> Iterator[tuple[Any, tuple[np.ndarray, np.ndarray, dict[str, Any]]]]:
        """As `batched`, with (mask, alpha, quality) (`assess`) in place of masks."""
        return self._batched(items, batch_size, self.assess)

    def _batched(
        self, items: Iterable[tuple[Any, np.ndarray]], batch_size: int, predict: Any
    ) -> Iterator[tuple[Any, Any]]:
        pending: list[tuple[Any, np.ndarray]] = []

        def flush() -> Iterator[tuple[Any, Any]]:
            keys, images = [k for k, _ in pending], [im for _, im in pending]
            pending.clear()
            yield from zip(keys, predict(images), strict=True)

        iterator = iter(items)
        while True:
            try:
                key, image = next(iterator)
            except StopIteration:
                break
            except Exception:
                if pending:
                    yield from flush()
                raise
            if pending and image.shape != pending[0][1].shape:
                yield from flush()
            pending.append((key, image))
            if len(pending) == batch_size:
                yield from flush()
        if pending:
            yield from flush()


# the alpha of a mask pixel stays above half, of a background pixel below, also once written as 8 bits
# (a logit exactly at the threshold is background in the mask but would round up to 128 of 255)
ALPHA_CAR, ALPHA_GROUND = 128.0 / 255, 127.0 / 255


COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")


def compile_mode(compile: bool | str, device: torch.device) -> str | None:
    """torch.compile's mode for `compile` (see Predictor) on `device`; None: eager."""
    if compile is True:
        return "default"
    if compile in (False, None, "off", "none", "false"):
        return None
    if compile == "auto":
        return "default" if device.type == "cuda" else None
    if compile not in COMPILE_MODES:
        raise CarsegError(f"compile={compile!r}: choose auto, off or one of {', '.join(COMPILE_MODES)}")
    return str(compile)


class EagerFallback(torch.nn.Module):
    """`net` compiled with `mode`; should compiling or the compiled graph fail, `net` itself, with one warning."""

    def __init__(self, net: torch.nn.Module, mode: str):
        super().__init__()
        self.net, self.mode = net, mode
        self.compiled: Any = torch.compile(net, mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as err:  # a backend missing here (no Triton, no C compiler), an unsupported op, ...
                warnings.warn(
                    f"torch.compile(mode={self.mode!r}) failed ({type(err).__name__}: {str(err)[:200]}); "
                    "predicting without it",
                    stacklevel=2,
                )
                self.compiled = None
        return self.net(x)


def edge_matte(mask: np.ndarray, prob: np.ndarray, band: int = MATTE_BAND, overwrite: bool = False) -> np.ndarray:
    """`prob` within `band` pixels of the edge of `mask` (either side), the 0/1 mask elsewhere (float32);
    above half exactly where the mask is car, in floats and in 8 bits. `overwrite`: reuse a float32 `prob`'s
    memory for the result (no copy of a photo's size)."""
    car = mask.astype(bool)
    alpha = prob.astype(np.float32, copy=not overwrite)
    np.maximum(alpha, np.float32(ALPHA_CAR), out=alpha, where=car)
    np.minimum(alpha, np.float32(ALPHA_GROUND), out=alpha, where=~car)
    outside = ~edge_band(mask, band)
    np.copyto(alpha, car, where=outside)
    return alpha


def _ort_session(path: Path, threads: int | None) -> Any:
    ort = require("onnxruntime", "onnx", "predicting with --onnx")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
    except Exception as err:  # onnxruntime raises its own exception types
        raise CarsegError(f"{path}: not a loadable ONNX model ({err})") from err


def _onnx_session(path: Path, threads: int | None) -> tuple[Any, float, list[int] | None, int]:
    """The ONNX Runtime session and the model's metadata: threshold, training size, pad multiple (models
    exported before the pad rule was recorded padded to 32)."""
    if not path.is_file():
        raise CarsegError(f"{path}: no such ONNX model file")
    session = _ort_session(path, threads)
    meta = session.get_modelmeta().custom_metadata_map
    size = json.loads(meta["input_size"]) if meta.get("input_size") else None
    pad = int(meta.get("pad_multiple", DEFAULT_MULTIPLE))
    return session, float(meta.get("threshold", 0.5)), size, pad


def _onnx_refiner(path: Path, session: Any, threads: int | None) -> tuple[TileRefiner, int] | None:
    """The edge refiner exported beside an ONNX model (named in its metadata) as a TileRefiner, and its band;
    None when the model was exported without one."""
    meta = session.get_modelmeta().custom_metadata_map
    if not meta.get("refiner"):
        return None
    second = path.with_name(meta["refiner"])
    if not second.is_file():
        raise CarsegError(
            f"{path}: its edge refiner {second.name} is missing beside it (`carseg export` writes both); copy it "
            "there, export again, or predict without it (--no-refiner in carseg predict and serve)"
        )
    refiner = _ort_session(second, threads)

    def run(photos: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        feeds = {"image": photos.float().numpy(), "coarse": coarse.float().numpy()}
        return torch.from_numpy(refiner.run(None, feeds)[0])

    run.alpha_sharpness = float(meta.get("alpha_sharpness", 1.0))  # type: ignore[attr-defined]
    return run, int(meta.get("refiner_band", 16))
