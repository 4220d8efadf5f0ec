"""A small model factory on segmentation-models-pytorch: any architecture with any smp or timm encoder."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch.nn as nn

from carseg.errors import CarsegError

ARCHITECTURES = {
    name.lower(): name
    for name in (
        "Unet",
        "UnetPlusPlus",
        "FPN",
        "DeepLabV3Plus",
        "DeepLabV3",
        "Linknet",
        "PSPNet",
        "PAN",
        "MAnet",
        "UPerNet",
        "Segformer",
    )
}


def create_model(
    arch: str = "Unet",
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    in_channels: int = 3,
    classes: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """Build `arch` (Unet, FPN, DeepLabV3Plus, ...) with `encoder_name` (smp name or `tu-<timm name>`)."""
    if arch.lower() not in ARCHITECTURES:
        raise CarsegError(f"model.net.arch={arch!r} is not known; choose one of {sorted(ARCHITECTURES.values())}")
    try:
        return smp.create_model(
            ARCHITECTURES[arch.lower()],
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=classes,
            **kwargs,
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        if encoder_weights is not None and _looks_like_download_error(err):
            raise _weights_error(encoder_name, encoder_weights, err) from err
        raise CarsegError(
            f"cannot build {arch} with encoder {encoder_name!r}: {err}. Check model.net.encoder_name "
            "(smp names such as resnet34, or 'tu-<timm model>') and the other model.net keys"
        ) from err
    except Exception as err:  # network, hub and file-system errors while fetching weights
        if encoder_weights is None:
            raise
        raise _weights_error(encoder_name, encoder_weights, err) from err


def _looks_like_download_error(err: Exception) -> bool:
    text = str(err).lower()
    return any(word in text for word in ("connect", "download", "offline", "hub", "resolve", "url", "network"))


def _weights_error(encoder: str, weights: str, err: Exception) -> CarsegError:
    return CarsegError(
        f"could not load pretrained weights {weights!r} for encoder {encoder!r} ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}). They are downloaded on first use and need network "
        "access or a filled Hugging Face / torch hub cache. Fix: train from scratch with "
        "model.net.encoder_weights=null, or download once on a connected machine and copy ~/.cache here"
    )
