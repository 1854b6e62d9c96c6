"""Per-video judgement "is this footage like the training footage?", and the lines that say so.

`judge_video` is the one computation: ``detect``, ``evaluate``, the demo and live scoring all
call it on a video's (or a window's) clip features with the run's stored
`vadpipe.model.ood.FeatureDistance`. A video is outside the training footage when more than
``max_share`` of its clips lie beyond the clip threshold; its scores, intervals and calibrated
probabilities then describe footage the model never learnt and the operating point was never
measured on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vadpipe.errors import DataError, VadpipeError
from vadpipe.model.data import FeatureSet, load_item, scan_features
from vadpipe.model.ood import FeatureDistance, load_distance

__all__ = [
    "OutsideFootageError",
    "VideoOOD",
    "judge_video",
    "judge_feature_set",
    "judge_run_features",
    "LiveJudge",
    "outside_line",
    "cannot_judge_line",
    "validate_ood_entry",
]


class OutsideFootageError(VadpipeError):
    """``--ood error``: some videos are outside the training footage (exit code 2)."""


@dataclass(frozen=True)
class VideoOOD:
    """One video's judgement.

    Attributes:
        clip_distances: (T,) each clip's distance from the training features (crops averaged).
        clip_threshold: distance beyond which a clip is outside the training footage.
        max_share: the video is outside when more than this share of clips are beyond.
    """

    clip_distances: tuple[float, ...]
    clip_threshold: float
    max_share: float

    @property
    def clips_outside(self) -> tuple[bool, ...]:
        return tuple(d > self.clip_threshold for d in self.clip_distances)

    @property
    def share_outside(self) -> float:
        return float(np.mean(self.clips_outside)) if self.clip_distances else 0.0

    @property
    def outside(self) -> bool:
        """Whether the whole video is outside the training footage."""
        return self.share_outside > self.max_share

    def to_dict(self) -> dict[str, Any]:
        """The intervals document's per-video ``ood`` entry."""
        return {
            "outside_training": self.outside,
            "share_outside": self.share_outside,
            "max_share": self.max_share,
            "clip_threshold": self.clip_threshold,
            "clip_distances": list(self.clip_distances),
        }


def judge_video(distance: FeatureDistance, crops: Sequence[np.ndarray]) -> VideoOOD:
    """Judge one video (or a live window) from its crops' (T, F) clip features."""
    d = distance.clip_distances(crops)
    return VideoOOD(
        clip_distances=tuple(float(x) for x in d),
        clip_threshold=float(distance.threshold),
        max_share=float(distance.max_share),
    )


class LiveJudge:
    """`judge_video` over the trailing ``window`` clips of an endless stream (``vadpipe watch``).

    ``push`` takes one clip's crops (n_crops, F) and returns the window's new `VideoOOD` when the
    verdict changes (inside -> outside or back), else None. No verdict is given before
    ``min_clips`` clips: a camera is not called outside on its first clip or two. ``seen`` and
    ``beyond`` count every clip pushed, for the stream's summary.
    """

    def __init__(self, distance: FeatureDistance, *, window: int, min_clips: int = 8) -> None:
        if window < 1 or min_clips < 1:
            raise DataError(f"window and min_clips must be >= 1, got {window} and {min_clips}")
        self.distance = distance
        self.min_clips = min(min_clips, window)
        self._distances: deque[float] = deque(maxlen=window)
        self.outside = False
        self.seen = 0
        self.beyond = 0

    def push(self, crops: np.ndarray) -> VideoOOD | None:
        crops = np.asarray(crops)
        d = float(self.distance.clip_distances([crops[c : c + 1] for c in range(len(crops))])[0])
        self._distances.append(d)
        self.seen += 1
        self.beyond += d > self.distance.threshold
        if len(self._distances) < self.min_clips:
            return None
        judgement = VideoOOD(
            clip_distances=tuple(self._distances),
            clip_threshold=float(self.distance.threshold),
            max_share=float(self.distance.max_share),
        )
        if judgement.outside == self.outside:
            return None
        self.outside = judgement.outside
        return judgement


def judge_feature_set(distance: FeatureDistance, features: FeatureSet) -> dict[str, VideoOOD]:
    """Judge every video of a feature set (e.g. `vadpipe evaluate`'s test features)."""
    crops: dict[str, list[np.ndarray]] = {}
    for item in features.items:
        crops.setdefault(item.video, []).append(load_item(item, feature_dim=features.feature_dim))
    return {name: judge_video(distance, arrays) for name, arrays in sorted(crops.items())}


def judge_run_features(run_dir: Path | str, features_dir: Path | str) -> dict[str, VideoOOD] | None:
    """Every test video of ``features_dir`` judged with the run's stored distance (`vadpipe
    evaluate`); None for a run that cannot judge."""
    distance = load_distance(run_dir)
    if distance is None:
        return None
    return judge_feature_set(distance, scan_features(features_dir, split="test"))


def outside_line(name: str, judgement: VideoOOD) -> str:
    """The one warning line of a video outside the training footage: what it means and what to do."""
    return (
        f"{name}: {judgement.share_outside:.0%} of its clips are outside the training footage "
        f"(more than {judgement.max_share:.0%}): its scores, intervals and calibrated probabilities are not "
        f"valid for it; extract and label some of this camera's footage and train again"
    )


def cannot_judge_line(run_dir: Path | str) -> str:
    """The one note for a run trained before vadpipe stored its training features' distribution."""
    return (
        f"the model in {run_dir} was trained before vadpipe recorded its training footage: it cannot tell "
        f"whether these videos are like it (train again to get this check)"
    )


def validate_ood_entry(entry: Any, where: str, *, n_clips: int) -> None:
    """Check a document's per-video ``ood`` entry (absent or null: not judged) of a video of ``n_clips``."""
    if entry is None:
        return
    if not isinstance(entry, dict):
        raise DataError(f"{where} must be an object or null, got {type(entry).__name__}")
    if not isinstance(entry.get("outside_training"), bool):
        raise DataError(f"{where}.outside_training must be true or false, got {entry.get('outside_training')!r}")
    for key in ("share_outside", "max_share"):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise DataError(f"{where}.{key} must be a number in [0, 1], got {value!r}")
    threshold = entry.get("clip_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise DataError(f"{where}.clip_threshold must be a finite number, got {threshold!r}")
    distances = entry.get("clip_distances")
    if not isinstance(distances, list) or not all(
        isinstance(d, (int, float)) and not isinstance(d, bool) and np.isfinite(d) and d >= 0 for d in distances
    ):
        raise DataError(f"{where}.clip_distances must be a list of finite numbers >= 0")
    if len(distances) != n_clips:
        raise DataError(f"{where}.clip_distances has {len(distances)} values for {n_clips} clips")
