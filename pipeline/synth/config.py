"""What to generate: the look of the videos, anomaly stretches and split sizes (frozen, validated)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np

from vadpipe.errors import ConfigError

__all__ = [
    "ANOMALY_KINDS",
    "CODECS",
    "DEMO_SPLITS",
    "VIEW_CROP_PX",
    "VIEW_SHORT_SIDE_PX",
    "Anomaly",
    "SplitSize",
    "SynthConfig",
]

ANOMALY_KINDS: tuple[str, ...] = ("run", "fall", "fight", "scatter")

CODECS = ("libx264", "mpeg4")
# The view of the extractor's default preprocessing (short side -> 256 px, centre crop 224 px):
# the action is kept inside it so that a centre-crop I3D sees every figure.
VIEW_SHORT_SIDE_PX = 256
VIEW_CROP_PX = 224


def _as_range(name: str, value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair) or pair[0] > pair[1]:
        raise ConfigError(f"{name} must be an int or an inclusive (min, max) pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class SynthConfig:
    """What the generated videos look like; the same config and seed give the same videos.

    Args:
        width, height: frame size in pixels (even numbers, for yuv420p).
        fps: frame rate of the encoded file.
        n_frames: frames per video, a fixed ``int`` or an inclusive ``(min, max)`` range drawn per video.
        n_figures: people per video, a fixed ``int`` or an inclusive ``(min, max)`` range.
        figure_height: height of a standing figure at the front of the scene, as a fraction of
            the frame height (figures further back are up to 30% smaller).
        anomaly_fraction: ``(min, max)`` share of an anomalous video's frames that are anomalous.
        anomaly_kinds: which of :data:`ANOMALY_KINDS` anomalous videos draw from (cycled in turn).
        codec: ``"auto"`` (``libx264`` when the installed PyAV has it, else ``mpeg4``),
            ``"libx264"`` or ``"mpeg4"``.
    """

    width: int = 320
    height: int = 240
    fps: int = 25
    n_frames: int | tuple[int, int] = (112, 160)
    n_figures: int | tuple[int, int] = (4, 7)
    figure_height: float = 0.26
    anomaly_fraction: tuple[float, float] = (0.25, 0.5)
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    codec: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_frames", _as_range("n_frames", self.n_frames))
        object.__setattr__(self, "n_figures", _as_range("n_figures", self.n_figures))
        object.__setattr__(self, "anomaly_fraction", tuple(float(f) for f in self.anomaly_fraction))
        object.__setattr__(self, "anomaly_kinds", tuple(self.anomaly_kinds))
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 64 or value % 2:
                raise ConfigError(f"{name} must be an even integer >= 64 (yuv420p needs even sizes), got {value!r}")
        if not isinstance(self.fps, int) or not 1 <= self.fps <= 120:
            raise ConfigError(f"fps must be an integer in [1, 120], got {self.fps!r}")
        if self.n_frames[0] < 16:
            raise ConfigError(f"n_frames must be >= 16 (one I3D clip), got {self.n_frames}")
        if self.n_figures[0] < 2 or self.n_figures[1] > 32:
            raise ConfigError(f"n_figures must lie in [2, 32] (a fight needs two people), got {self.n_figures}")
        if not 0.05 <= self.figure_height <= 0.6:
            raise ConfigError(
                f"figure_height must be a fraction of the frame height in [0.05, 0.6], got {self.figure_height}"
            )
        lo, hi = self.anomaly_fraction if len(self.anomaly_fraction) == 2 else (-1.0, -1.0)
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                f"anomaly_fraction must be (min, max) with 0 < min <= max <= 1, got {self.anomaly_fraction}"
            )
        unknown = [k for k in self.anomaly_kinds if k not in ANOMALY_KINDS]
        if not self.anomaly_kinds or unknown:
            raise ConfigError(f"anomaly_kinds must be a non-empty subset of {ANOMALY_KINDS}, got {self.anomaly_kinds}")
        if self.codec not in ("auto", *CODECS):
            raise ConfigError(f"codec must be 'auto', 'libx264' or 'mpeg4', got {self.codec!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict (ranges as lists) that :meth:`from_dict` turns back into the same config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthConfig:
        """Inverse of :meth:`to_dict`."""
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"not a SynthConfig dict: {exc}") from None


@dataclass(frozen=True)
class Anomaly:
    """One abnormal stretch: ``kind`` (one of :data:`ANOMALY_KINDS`) on frames ``[start_frame, end_frame)``."""

    kind: str
    start_frame: int
    end_frame: int

    def __post_init__(self) -> None:
        if self.kind not in ANOMALY_KINDS:
            raise ConfigError(f"anomaly kind must be one of {ANOMALY_KINDS}, got {self.kind!r}")
        if not 0 <= self.start_frame < self.end_frame:
            raise ConfigError(
                f"anomaly frames must satisfy 0 <= start_frame < end_frame, got [{self.start_frame}, {self.end_frame})"
            )


@dataclass(frozen=True)
class SplitSize:
    """How many normal and anomalous videos one split holds."""

    normal: int
    anomalous: int

    def __post_init__(self) -> None:
        if self.normal < 0 or self.anomalous < 0 or self.normal + self.anomalous == 0:
            raise ConfigError(f"a split needs >= 0 videos of each label and at least one in all, got {self}")


# The demo's default: 24 training and 8 held-out videos (about 270 I3D clips at the default length).
DEMO_SPLITS: Mapping[str, SplitSize] = MappingProxyType({"train": SplitSize(12, 12), "test": SplitSize(4, 4)})
