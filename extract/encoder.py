"""I3D on one device: where the network of every in-process executor (and of the Ray actor) runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vadpipe.errors import ConfigError

from .i3d import InceptionI3d
from .inference import inference_network
from .settings import ExtractionSettings
from .weights import ResolvedWeights, build_i3d, weights_for

__all__ = ["ClipEncoder", "select_device", "load_encoder"]


def select_device(name: str | None = None) -> torch.device:
    """``auto``/None -> CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but CUDA is not available on this machine")
    return device


class ClipEncoder:
    """I3D on one device: uint8 crops (N, 3, T, S, S) -> (N, 1024) float32 features.

    What each precision and runtime mean on each device, BatchNorm folding and the memory format
    are decided in ``inference.inference_network``.
    """

    def __init__(
        self, model: InceptionI3d, device: torch.device, precision: str = "fp32", *, runtime: str = "torch"
    ) -> None:
        self.device = device
        self.precision = precision
        self.runtime = runtime
        self._network = inference_network(model, device, precision, runtime=runtime)

    def __call__(self, clips: torch.Tensor) -> np.ndarray:
        return self._network(clips)


def load_encoder(
    settings: ExtractionSettings,
    *,
    weights: Path | None = None,
    device: str | None = None,
    resolved: ResolvedWeights | None = None,
) -> tuple[ClipEncoder, ExtractionSettings]:
    """I3D on the chosen device, and ``settings`` stamped with the identity of the weights loaded.

    ``resolved``: weights the caller already resolved (and so verified): built from as they are,
    not read again; else ``weights`` is resolved here.
    """
    dev = select_device(device)
    found = weights_for(settings.backbone, weights, resolved=resolved)
    model = build_i3d(found, device=dev)
    return (
        ClipEncoder(model, dev, settings.precision, runtime=settings.runtime),
        settings.with_weights(found.weights_id),
    )
