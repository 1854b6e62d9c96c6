"""Extraction settings: one frozen value whose canonical JSON and hash identify a feature set."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace

from vadpipe.errors import ConfigError

__all__ = ["ExtractionSettings", "CROP_MODES", "DECODERS", "PRECISIONS", "crop_names"]

CROP_MODES = ("center", "five", "ten")
DECODERS = ("pyav", "decord")
PRECISIONS = ("fp32", "bf16", "fp16")
_FIVE = ("center", "top_left", "top_right", "bottom_left", "bottom_right")


def crop_names(mode: str) -> list[str]:
    """Names per crop index: 0 is always the centre (as in the XD-Violence release)."""
    if mode == "center":
        return ["center"]
    if mode == "five":
        return list(_FIVE)
    return list(_FIVE) + [f"{name}_flip" for name in _FIVE]


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes the numbers of a feature file.

    ``fps=None`` keeps the native frame rate (as the published feature sets do). The trailing
    frames that do not fill a whole clip are dropped. ``weights_sha256`` identifies the I3D
    weights (sha256 of DeepMind's original pickle for the default weights).
    """

    clip_len: int = 16
    stride: int = 16
    fps: float | None = None
    resize_short: int = 256
    crop_size: int = 224
    crops: str = "center"
    decoder: str = "pyav"
    precision: str = "fp32"
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        if self.clip_len < 1:
            raise ConfigError(f"clip_len must be >= 1, got {self.clip_len}")
        if self.stride < 1:
            raise ConfigError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and not 0 < self.fps < math.inf:
            raise ConfigError(f"fps must be a finite number > 0, got {self.fps}")
        if self.crop_size < 1 or self.resize_short < self.crop_size:
            raise ConfigError(
                f"need resize_short >= crop_size >= 1, got resize_short={self.resize_short}, crop_size={self.crop_size}"
            )
        for name, value, allowed in (
            ("crops", self.crops, CROP_MODES),
            ("decoder", self.decoder, DECODERS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    @property
    def crop_names(self) -> list[str]:
        return crop_names(self.crops)

    def with_weights(self, weights_sha256: str) -> "ExtractionSettings":
        return replace(self, weights_sha256=weights_sha256)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExtractionSettings":
        return cls(**data)

    def key(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON: equal keys mean equal features."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
