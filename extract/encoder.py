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

__all__ = ["ClipEncoder", "auto_device", "known_device", "select_device", "load_encoder"]


def auto_device(runtime: str, cuda_available: bool, *, device_type: str = "") -> str:
    """What ``--device auto`` means: the CPU for the ``openvino`` runtime (it runs only on CPUs,
    so CUDA would be refused later); the settings' ``device_type`` where they have one (bf16
    features of a model are the numbers of one device type) and it is here; else CUDA when here."""
    if runtime == "openvino":
        return "cpu"
    if device_type:
        return device_type if device_type != "cuda" or cuda_available else "cpu"
    return "cuda" if cuda_available else "cpu"


def known_device(name: str, *, hint: str = "auto, cpu, cuda or cuda:N") -> torch.device:
    """An explicit device this machine has: a CPU, or a CUDA device within its count.

    Refused with one line naming the device and what exists, here rather than as a traceback in
    ``.to()`` (``mps``, ``xla``... are devices torch knows but vadpipe does not run on).
    """
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use {hint})") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: only cpu and cuda devices are supported (use {hint})")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            have = f"cuda:0 to cuda:{count - 1}" if count else "CUDA is not available"
            raise ConfigError(f"device {name} requested but this machine has {count} CUDA device(s) ({have})")
    return device


def select_device(name: str | None = None, *, runtime: str = "torch", device_type: str = "") -> torch.device:
    """``auto``/None -> ``auto_device``; else the ``known_device`` named."""
    if name in (None, "", "auto"):
        return torch.device(auto_device(runtime, torch.cuda.is_available(), device_type=device_type))
    return known_device(name)


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
    """I3D on the chosen device, and ``settings`` stamped with the identity of the weights loaded
    and (bf16) the device type.

    ``resolved``: weights the caller already resolved (and so verified): built from as they are,
    not read again; else ``weights`` is resolved here.
    """
    dev = select_device(device, runtime=settings.runtime, device_type=settings.device_type)
    found = weights_for(settings.backbone, weights, resolved=resolved)
    model = build_i3d(found, device=dev)
    return (
        ClipEncoder(model, dev, settings.precision, runtime=settings.runtime),
        settings.with_weights(found.weights_id).on_device(dev.type),
    )
