"""From a per-clip score curve to frame-rate curves and temporal proposals (postprocess/README.md §2-§3).

The frame curve is the authors' cubic B-spline zoom of the weighted T-CAM, clipped; a proposal
is a maximal run of frames strictly above the threshold, scored by the mean of the curve over it
(postprocess/README.md §3: all runs are kept, not only the largest). Frame indices are *curve* indices here; mapping
them to source-video frames and seconds is `vadpipe.postprocess.intervals`' job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from vadpipe.errors import ConfigError, DataError

__all__ = [
    "Proposal",
    "interpolate_to_frames",
    "find_proposals",
    "merge_proposals",
    "paint_proposals",
]


@dataclass(frozen=True)
class Proposal:
    """A run of frames ``[start, end)`` of a frame curve (``end`` exclusive) and its score."""

    start: int
    end: int
    score: float

    @property
    def length(self) -> int:
        return self.end - self.start


def _as_curve(curve: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(curve)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} holds {int(np.sum(~np.isfinite(arr)))} NaN/inf values")
    return arr


def interpolate_to_frames(curve: np.ndarray, *, clip_len: int = 16, low: float = 0.05, high: float = 1.0) -> np.ndarray:
    """Per-clip scores -> one score per frame, exactly as the authors' test code does.

    ``scipy.ndimage.zoom(curve, clip_len, order=3)`` is a corner-aligned cubic B-spline that
    passes through every input value (output ``i`` samples input coordinate
    ``i (T'-1)/(clip_len T'-1)``); then values below ``low`` are set to 0 (this also removes the
    spline's undershoot) and values above ``high`` are set to 1. A single value is repeated
    (the authors' code crashes there, postprocess/README.md §2). Floating inputs keep their dtype (float32 in, float32
    out, as in the reference code, so ties at the clipping levels are the same).

    Args:
        curve: (T',) per-clip scores, e.g. the weighted T-CAM.
        clip_len: frames per clip (the zoom factor).
        low: values strictly below it become 0.
        high: values strictly above it become 1.

    Returns:
        (clip_len * T',) frame-level curve.

    Example:
        >>> interpolate_to_frames(np.array([0.2, 0.8]), clip_len=4).round(3)
        array([0.2  , 0.233, 0.319, 0.436, 0.564, 0.681, 0.767, 0.8  ])
    """
    if isinstance(clip_len, bool) or not isinstance(clip_len, (int, np.integer)) or clip_len < 1:
        raise ConfigError(f"clip_len must be an integer >= 1, got {clip_len!r}")
    if not low <= high:
        raise ConfigError(f"low must be <= high, got low={low}, high={high}")
    arr = _as_curve(curve, "curve")
    if arr.size == 0:
        return arr.copy()
    if arr.size == 1:
        frames = np.repeat(arr, clip_len)
    else:
        frames = scipy.ndimage.zoom(arr, clip_len, order=3)
    frames[frames < low] = 0
    frames[frames > high] = 1
    return frames


def _validate_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0 (frames), got {value!r}")


def _span_mean(f: np.ndarray, start: int, end: int) -> float:
    """The curve's mean over ``[start, end)``, kept inside the span's own range.

    Summation rounding can put the mean of nearly equal (or subnormal) values a step outside
    [min, max]; clipping keeps "a proposal's score is above the threshold its frames passed".
    """
    span = f[start:end]
    return float(np.clip(span.mean(), span.min(), span.max()))


def find_proposals(
    frame_curve: np.ndarray,
    *,
    threshold: float = 0.35,
    min_len: int = 0,
    merge_gap: int = 0,
) -> list[Proposal]:
    """Maximal runs of frames with ``frame_curve > threshold`` (strict), sorted by time.

    Each run's score is the mean of the curve over the run. Runs separated by at most
    ``merge_gap`` frames are merged first (see `merge_proposals`: the merged score is the mean
    over the *whole* merged span, gap frames included, so a proposal's score is always the mean
    of the curve over exactly the frames it covers); then proposals shorter than ``min_len``
    frames are dropped. ``merge_gap=0`` and ``min_len=0`` give the paper's behaviour.

    Args:
        frame_curve: (N,) frame-level curve, usually from `interpolate_to_frames`.
        threshold: frames strictly above it are proposal frames.
        min_len: minimum proposal length in frames, applied after merging.
        merge_gap: merge neighbours whose gap (frames at or below the threshold between them)
            is at most this many frames.

    Returns:
        Proposals ``[start, end)`` in curve frame indices, disjoint and sorted.

    Example:
        >>> find_proposals(np.array([0.0, 0.5, 0.7, 0.1, 0.9]), threshold=0.35)
        [Proposal(start=1, end=3, score=0.6), Proposal(start=4, end=5, score=0.9)]
    """
    if not np.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    _validate_count(min_len, "min_len")
    _validate_count(merge_gap, "merge_gap")
    f = _as_curve(frame_curve, "frame_curve")
    if f.size == 0:
        return []
    labels, n_runs = scipy.ndimage.label(f > threshold)
    proposals = []
    for run in scipy.ndimage.find_objects(labels)[:n_runs]:
        start, end = int(run[0].start), int(run[0].stop)
        proposals.append(Proposal(start, end, _span_mean(f, start, end)))
    if merge_gap > 0:
        proposals = merge_proposals(proposals, f, should_merge=lambda a, b: b.start - a.end <= merge_gap)
    return [p for p in proposals if p.length >= min_len]


def merge_proposals(
    proposals: list[Proposal],
    frame_curve: np.ndarray,
    *,
    should_merge: Callable[[Proposal, Proposal], bool],
) -> list[Proposal]:
    """Merge consecutive proposals (sorted, disjoint) while ``should_merge(previous, next)``.

    The merged proposal spans ``[first.start, last.end)`` and is re-scored as the mean of
    ``frame_curve`` over that whole span. The criterion is a callable so the same rule serves
    gaps counted in frames (`find_proposals`) and in seconds of real timestamps (intervals).
    """
    f = np.asarray(frame_curve)
    merged: list[Proposal] = []
    for p in proposals:
        if merged and should_merge(merged[-1], p):
            start = merged[-1].start
            merged[-1] = Proposal(start, p.end, _span_mean(f, start, p.end))
        else:
            merged.append(p)
    return merged


def paint_proposals(proposals: list[Proposal], n_frames: int) -> np.ndarray:
    """The proposal-frame score curve ``q``: 0 everywhere, each proposal's frames its score.

    This is the score of the Table-1 "proposal-frame" metric (postprocess/README.md §3).
    """
    _validate_count(n_frames, "n_frames")
    q = np.zeros(n_frames, dtype=np.float64)
    for p in proposals:
        if not 0 <= p.start < p.end <= n_frames:
            raise DataError(f"proposal [{p.start}, {p.end}) is outside a curve of {n_frames} frames")
        q[p.start : p.end] = p.score
    return q
