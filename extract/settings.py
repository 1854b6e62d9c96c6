"""Extraction settings: one frozen value whose canonical JSON and hash identify a feature set."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace

from vadpipe.errors import ConfigError

from .backbones import BACKBONES, DEFAULT_BACKBONE, IMAGENET

__all__ = [
    "ExtractionSettings",
    "CROP_MODES",
    "DECODERS",
    "PRECISIONS",
    "PROFILES",
    "RUNTIMES",
    "DEVICE_TYPES",
    "crop_names",
    "backbone_of_weights",
]

CROP_MODES = ("center", "five", "ten")
DECODERS = ("pyav", "decord")
PRECISIONS = ("fp32", "bf16", "fp16")
RUNTIMES = ("torch", "openvino")  # extract/inference.py runs the network with each
_FIVE = ("center", "top_left", "top_right", "bottom_left", "bottom_right")

# Fields added after the first caches were written: at these values they stay out of the key, so
# those caches keep their key (they were all made with the scratch network, no frame dropped).
_LATER_FIELDS = {"backbone": DEFAULT_BACKBONE, "drop_last_frame": False, "runtime": "torch", "device_type": ""}
DEVICE_TYPES = ("cpu", "cuda")  # where ``device_type`` is set (bf16 only)

# Named settings. xd-violence: what is known of the released XD-Violence I3D features (README,
# "Weights"): the ImageNet-inflated network, five crops with the centre first, 16-frame
# non-overlapping clips at the native frame rate, the video's last frame dropped.
PROFILES: dict[str, dict] = {
    "xd-violence": {
        "backbone": IMAGENET.id,
        "crops": "five",
        "clip_len": 16,
        "stride": 16,
        "fps": None,
        "drop_last_frame": True,
    },
}


def backbone_of_weights(weights_sha256: str) -> str | None:
    """The backbone whose weights id this is (None for an id vadpipe does not know)."""
    return next((b.id for b in BACKBONES.values() if b.weights_id == weights_sha256), None)


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
    frames that do not fill a whole clip are dropped; ``drop_last_frame`` also ignores the
    video's very last frame (the XD-Violence release does). ``backbone`` names the I3D network
    and ``weights_sha256`` its verified weights (``Backbone.weights_id``). ``runtime`` runs the
    network (``torch``, or ``openvino`` on CPUs): its features agree with torch's to float
    rounding, but not bit for bit, so it is part of the key like ``precision``.

    ``device_type`` is where a bf16 network ran, stamped by ``on_device``: bf16 is autocast on
    CUDA (weights and reductions in fp32) but a whole bfloat16 network on a CPU, two different
    sets of numbers, so they are two keys. Empty for fp32 (the same numbers on every device, TF32
    off) and fp16 (CUDA only): their keys and records are as before the field existed.
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
    backbone: str = DEFAULT_BACKBONE
    drop_last_frame: bool = False
    runtime: str = "torch"
    device_type: str = ""

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
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
            ("runtime", self.runtime, RUNTIMES),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.device_type and (self.precision != "bf16" or self.device_type not in DEVICE_TYPES):
            raise ConfigError(
                f"device_type is {' or '.join(DEVICE_TYPES)} for bf16 features only, "
                f"got {self.device_type!r} with {self.precision}"
            )

    @property
    def crop_names(self) -> list[str]:
        return crop_names(self.crops)

    @classmethod
    def profile(cls, name: str, **values) -> ExtractionSettings:
        """The named profile's settings; ``values`` may set the fields the profile leaves open."""
        if name not in PROFILES:
            raise ConfigError(f"unknown profile {name!r}: choose {', '.join(PROFILES)}")
        fixed = PROFILES[name]
        clashes = [f"{k}={v!r} (profile: {fixed[k]!r})" for k, v in values.items() if k in fixed and fixed[k] != v]
        if clashes:
            raise ConfigError(f"the {name} profile fixes {', '.join(clashes)}; drop these options or the profile")
        return cls(**{**values, **fixed})

    def with_weights(self, weights_sha256: str) -> ExtractionSettings:
        """These settings with the weights at hand, which must be the settings' backbone."""
        found = backbone_of_weights(weights_sha256)
        if found is not None and found != self.backbone:
            raise ConfigError(
                f"the settings ask for the {self.backbone} I3D network, but the weights at hand are "
                f"{found}: pass {self.backbone} weights with --weights"
            )
        return replace(self, weights_sha256=weights_sha256)

    def on_device(self, device_type: str) -> ExtractionSettings:
        """These settings for a network on a ``device_type`` device (``cpu``, ``cuda``): recorded for bf16 only."""
        return replace(self, device_type=device_type if self.precision == "bf16" else "")

    def to_dict(self) -> dict:
        """The fields, ``device_type`` only where set (the records of fp32 and fp16 stay as they were)."""
        data = asdict(self)
        if not data["device_type"]:
            del data["device_type"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ExtractionSettings:
        return cls(**data)

    def key(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON: equal keys mean equal features."""
        data = {k: v for k, v in self.to_dict().items() if k not in _LATER_FIELDS or _LATER_FIELDS[k] != v}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
