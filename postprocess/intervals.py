"""The intervals JSON document `vadpipe detect` writes, and the frame -> seconds mapping behind it.

Times come from the real presentation time of every decoded frame (float64 ``(n_frames,)``,
the cache's ``S.times.npy``), never from ``frame / fps``, so variable-frame-rate files are right.

Document (``schema_version`` 1)::

    {"schema_version": 1,
     "operating_point": {"threshold": 0.35, "low": 0.05, "high": 1.0,
                         "min_duration_s": 0.0, "merge_gap_s": 0.0,
                         "video_threshold": 0.0, "method": "fixed",
                         "target_false_alarm_rate": null,
                         "video_calibration": null, "interval_calibration": null},
     "videos": [{"source": str, "duration_s": float, "fps": float, "n_frames": int,
                 "clip_len": int, "video_score": float, "video_probability": float | null,
                 "clips": [{"start_s", "attention", "tcam", "wtcam"}, ...],
                 "intervals": [{"start_frame", "end_frame" (exclusive), "start_s", "end_s",
                                "score", "calibrated_score": float | null}, ...],
                 "ood": {"outside_training": bool, "share_outside": float, "max_share": float,
                         "clip_threshold": float, "clip_distances": [float, ...]} | null}, ...]}

Intervals are sorted by time and disjoint; every score lies in [0, 1]. The operating point's
keys from ``video_threshold`` on, ``video_probability`` and ``calibrated_score`` were added
after the first release of schema 1 and are optional when reading: a document without them is
one written at the paper's fixed threshold without calibration. ``ood`` (added later too, absent
or null: not judged, e.g. a model trained before vadpipe recorded its training footage) says
whether the video is outside the training footage (`vadpipe.postprocess.ood`): then its scores
and probabilities are not valid for it. Readers that ignore unknown keys read every version.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vadpipe.errors import CheckpointError, ConfigError, DataError
from vadpipe.extract.fileio import atomic_write_text
from vadpipe.model.run_config import OPERATING_POINT_METHODS, SavedOperatingPoint
from vadpipe.postprocess.calibration import ScoreCalibrator
from vadpipe.postprocess.ood import VideoOOD, validate_ood_entry
from vadpipe.postprocess.proposals import (
    Proposal,
    find_proposals,
    interpolate_to_frames,
    merge_proposals,
)

__all__ = [
    "SCHEMA_VERSION",
    "OPERATING_POINT_SOURCES",
    "ClipRecord",
    "Interval",
    "OperatingPoint",
    "VideoIntervals",
    "IntervalsDocument",
    "curve_to_source_frames",
    "end_time_s",
    "frame_span_to_seconds",
    "intervals_from_curve",
    "build_video_intervals",
    "document_to_dict",
    "validate_document",
    "write_intervals",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ClipRecord:
    """Scores of one clip, starting at ``start_s`` seconds."""

    start_s: float
    attention: float
    tcam: float
    wtcam: float


@dataclass(frozen=True)
class Interval:
    """An anomalous interval: source frames ``[start_frame, end_frame)`` and their times.

    ``score`` is the mean weighted T-CAM over the interval; ``calibrated_score`` the
    probability the operating point's interval calibration gives it (None without one).
    """

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    score: float
    calibrated_score: float | None = None


OPERATING_POINT_SOURCES = OPERATING_POINT_METHODS  # defined with the run config that stores them


@dataclass(frozen=True)
class OperatingPoint:
    """How intervals were cut from the scores (recorded so a document can be reproduced).

    Attributes:
        threshold: curve threshold: intervals are the runs of the frame-rate weighted T-CAM
            strictly above it.
        low, high: clipping of the frame curve (method.md §6 step 3).
        min_duration_s, merge_gap_s: interval post-filters in seconds.
        video_threshold: video gate: a video whose video score is below it gets no interval.
        method: where the thresholds come from: ``"fixed"`` (the paper's 0.35, no gate),
            ``"manual"`` (given by the user), ``"false_alarms"`` or ``"f1"`` (calibrated on
            held-out training videos, see `vadpipe.postprocess.calibration`).
        target_false_alarm_rate: the target the thresholds were chosen for, if any.
        video_calibration: video score -> probability the video is anomalous.
        interval_calibration: interval score -> probability the interval is a real detection.
    """

    threshold: float = 0.35
    low: float = 0.05
    high: float = 1.0
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    video_threshold: float = 0.0
    method: str = "fixed"
    target_false_alarm_rate: float | None = None
    video_calibration: ScoreCalibrator | None = None
    interval_calibration: ScoreCalibrator | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("video_calibration", "interval_calibration"):
            value = getattr(self, key)
            data[key] = value.to_dict() if value is not None else None
        return data

    @classmethod
    def for_run(
        cls,
        saved: SavedOperatingPoint | None,
        *,
        where: str,
        threshold: float | None = None,
        video_threshold: float | None = None,
        min_duration_s: float = 0.0,
        merge_gap_s: float = 0.0,
    ) -> OperatingPoint:
        """The operating point to detect with: the run's calibrated one, or the caller's.

        ``threshold`` or ``video_threshold`` given: a manual operating point (the other one
        from the run when only the gate is given; no gate when only the threshold is given,
        the paper's rule). The video calibration is kept (it does not depend on thresholds);
        the interval calibration, fitted on the intervals of the run's thresholds, is dropped.
        A run without a saved operating point gets the paper's fixed 0.35 and no gate.

        Args:
            saved: the run's stored operating point (`RunConfig.operating_point`, checked
                when the run was loaded), or None.
            where: names the run's config in error messages.

        Raises:
            CheckpointError: a stored score calibration is unusable.
        """
        saved = saved or SavedOperatingPoint()

        def calibrator(key: str) -> ScoreCalibrator | None:
            stored = getattr(saved, key)
            if stored is None:
                return None
            try:
                return ScoreCalibrator.from_dict(dict(stored))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: operating_point.{key} is unusable: {exc}") from None

        common = {
            "min_duration_s": min_duration_s,
            "merge_gap_s": merge_gap_s,
            "video_calibration": calibrator("video_calibration"),
        }
        if threshold is not None or video_threshold is not None:
            curve = threshold if threshold is not None else saved.threshold
            return cls(threshold=float(curve), video_threshold=float(video_threshold or 0.0), method="manual", **common)
        return cls(
            threshold=saved.threshold,
            video_threshold=saved.video_threshold,
            method=saved.method,
            target_false_alarm_rate=saved.target_false_alarm_rate,
            interval_calibration=calibrator("interval_calibration"),
            **common,
        )


@dataclass(frozen=True)
class VideoIntervals:
    """One video's entry of the document."""

    source: str
    duration_s: float
    fps: float
    n_frames: int
    clip_len: int
    video_score: float
    clips: tuple[ClipRecord, ...]
    intervals: tuple[Interval, ...]
    video_probability: float | None = None
    ood: VideoOOD | None = None  # None: not judged (the model cannot)


@dataclass(frozen=True)
class IntervalsDocument:
    """The whole document; ``schema_version`` is fixed by this module."""

    videos: tuple[VideoIntervals, ...]
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    schema_version: int = SCHEMA_VERSION


def curve_to_source_frames(curve_index: np.ndarray | int, *, start_frames: np.ndarray, clip_len: int) -> np.ndarray:
    """Map frame-curve indices to source-video frame indices.

    The frame curve holds ``clip_len`` values per clip; value ``i`` is frame
    ``i % clip_len`` of clip ``i // clip_len``, which starts at source frame
    ``start_frames[i // clip_len]`` (clips are contiguous runs of ``clip_len`` frames).

    Example:
        >>> curve_to_source_frames(np.array([0, 3, 4, 7]), start_frames=np.array([2, 10]),
        ...                        clip_len=4).tolist()
        [2, 5, 10, 13]
    """
    starts = np.asarray(start_frames, dtype=np.int64)
    idx = np.asarray(curve_index, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= starts.size * clip_len):
        raise DataError(
            f"curve index out of range: the curve of {starts.size} clips x {clip_len} frames "
            f"has {starts.size * clip_len} values"
        )
    return starts[idx // clip_len] + idx % clip_len


def end_time_s(frame_times_s: np.ndarray) -> float:
    """End of the video: last frame's time plus its duration.

    The last frame's duration is taken equal to the interval before it (a single frame has no
    such interval: pass the video's own end time to `frame_span_to_seconds` instead).
    """
    times = np.asarray(frame_times_s, dtype=np.float64)
    if times.size < 2:
        raise DataError("need at least 2 frame times to infer when the last frame ends")
    return float(times[-1] + (times[-1] - times[-2]))


def frame_span_to_seconds(
    start_frame: int,
    end_frame: int,
    *,
    frame_times_s: np.ndarray,
    video_end_s: float | None = None,
) -> tuple[float, float]:
    """Seconds of source frames ``[start_frame, end_frame)`` from real presentation times.

    ``start_s = times[start_frame]``; ``end_s = times[end_frame]`` (the next frame's start),
    or the video's end time when the span reaches the last frame (``video_end_s``, default
    `end_time_s`).
    """
    times = np.asarray(frame_times_s, dtype=np.float64)
    n = times.size
    if not 0 <= start_frame < end_frame <= n:
        raise DataError(f"frame span [{start_frame}, {end_frame}) is outside 0..{n} frames")
    if end_frame < n:
        end = float(times[end_frame])
    else:
        end = float(video_end_s) if video_end_s is not None else end_time_s(times)
    return float(times[start_frame]), end


def intervals_from_curve(
    frame_curve: np.ndarray,
    *,
    start_frames: np.ndarray,
    clip_len: int,
    frame_times_s: np.ndarray,
    video_end_s: float | None = None,
    threshold: float = 0.35,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
) -> list[Interval]:
    """Proposals of a frame curve as source-frame intervals with real times.

    Runs above ``threshold`` (`find_proposals`) are mapped to source frames; neighbours whose
    gap in seconds is at most ``merge_gap_s`` are merged (score = curve mean over the merged
    span, as in `merge_proposals`), then intervals shorter than ``min_duration_s`` are dropped.
    Seconds come from the timestamps, so both options mean the same on variable-rate files.

    Args:
        frame_curve: (clip_len * T,) curve, e.g. `interpolate_to_frames` of the weighted T-CAM.
        start_frames: (T,) source frame where each clip starts.
        clip_len: frames per clip.
        frame_times_s: (n_frames,) float64 presentation time of every source frame.
        video_end_s: end of the last frame (default `end_time_s`).
    """
    for name, value in (("min_duration_s", min_duration_s), ("merge_gap_s", merge_gap_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be >= 0 seconds, got {value}")
    curve = np.asarray(frame_curve)
    starts = np.asarray(start_frames, dtype=np.int64)
    if curve.size != starts.size * clip_len:
        raise DataError(f"frame curve has {curve.size} values, expected {starts.size} clips x {clip_len}")

    def seconds(p: Proposal) -> tuple[int, int, float, float]:
        first = int(curve_to_source_frames(p.start, start_frames=starts, clip_len=clip_len))
        last = int(curve_to_source_frames(p.end - 1, start_frames=starts, clip_len=clip_len))
        start_s, end_s = frame_span_to_seconds(first, last + 1, frame_times_s=frame_times_s, video_end_s=video_end_s)
        return first, last + 1, start_s, end_s

    proposals = find_proposals(curve, threshold=threshold)
    if merge_gap_s > 0:
        proposals = merge_proposals(
            proposals,
            curve,
            should_merge=lambda a, b: seconds(b)[2] - seconds(a)[3] <= merge_gap_s,
        )
    intervals = [Interval(*seconds(p), p.score) for p in proposals]
    return [i for i in intervals if i.end_s - i.start_s >= min_duration_s]


def build_video_intervals(
    *,
    source: str,
    attention: np.ndarray,
    tcam: np.ndarray,
    wtcam: np.ndarray,
    video_score: float,
    start_frames: np.ndarray,
    clip_len: int,
    frame_times_s: np.ndarray,
    duration_s: float,
    fps: float,
    video_end_s: float | None = None,
    operating_point: OperatingPoint = OperatingPoint(),
) -> VideoIntervals:
    """One video's document entry from its full-rate per-clip scores (`score_video`'s).

    The curve ``wtcam`` is zoomed to frame rate, clipped and cut into intervals with
    ``operating_point``; ``attention`` and ``tcam`` are recorded beside it (with several crops
    ``wtcam`` is the mean of the crops' products, not the product of these means). ``duration_s`` and ``fps`` are recorded as given;
    ``video_end_s`` is when the last frame ends (default `end_time_s`).
    """
    att = np.asarray(attention, dtype=np.float32)
    tc = np.asarray(tcam, dtype=np.float32)
    wtcam = np.asarray(wtcam, dtype=np.float32)
    starts = np.asarray(start_frames, dtype=np.int64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if not att.shape == tc.shape == wtcam.shape == starts.shape:
        raise DataError(
            f"attention {att.shape}, tcam {tc.shape}, wtcam {wtcam.shape} and start_frames {starts.shape} differ"
        )
    op = operating_point
    curve = interpolate_to_frames(wtcam, clip_len=clip_len, low=op.low, high=op.high)
    intervals = intervals_from_curve(
        curve,
        start_frames=starts,
        clip_len=clip_len,
        frame_times_s=times,
        video_end_s=video_end_s,
        threshold=op.threshold,
        min_duration_s=op.min_duration_s,
        merge_gap_s=op.merge_gap_s,
    )
    if video_score < op.video_threshold:
        intervals = []
    if op.interval_calibration is not None and intervals:
        calibrated = op.interval_calibration(np.array([i.score for i in intervals]))
        intervals = [replace(i, calibrated_score=float(c)) for i, c in zip(intervals, calibrated)]
    probability = float(op.video_calibration(np.array([video_score]))[0]) if op.video_calibration is not None else None
    clips = tuple(
        ClipRecord(float(times[s]), float(a), float(t), float(w)) for s, a, t, w in zip(starts, att, tc, wtcam)
    )
    return VideoIntervals(
        source=str(source),
        duration_s=float(duration_s),
        fps=float(fps),
        n_frames=int(times.size),
        clip_len=int(clip_len),
        video_score=float(video_score),
        clips=clips,
        intervals=tuple(intervals),
        video_probability=probability,
    )


def document_to_dict(doc: IntervalsDocument) -> dict[str, Any]:
    """The JSON-ready dict of a document, keys in schema order."""
    videos = []
    for v in doc.videos:
        entry = {k: val for k, val in asdict(v).items() if k not in ("clips", "intervals", "video_probability", "ood")}
        videos.append(
            {
                **entry,
                "video_probability": v.video_probability,
                "clips": [asdict(c) for c in v.clips],
                "intervals": [asdict(i) for i in v.intervals],
                "ood": v.ood.to_dict() if v.ood is not None else None,
            }
        )
    return {
        "schema_version": doc.schema_version,
        "operating_point": doc.operating_point.to_dict(),
        "videos": videos,
    }


# --- validation -----------------------------------------------------------------------------


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise DataError(f"{where} must be an object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{where}.{key} is missing")
    value = obj[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{where}.{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise DataError(f"{where}.{key} must be finite, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"{where}.{key} must be {kind.__name__}, got {value!r}")
    return value


def _unit(obj: dict, key: str, where: str) -> float:
    value = _get(obj, key, float, where)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}.{key} must lie in [0, 1], got {value}")
    return value


def _optional_unit(obj: dict, key: str, where: str) -> None:
    """A key added later in schema 1: absent or null is fine, else a number in [0, 1]."""
    if obj.get(key) is not None:
        _unit(obj, key, where)


def _validate_operating_point(op: dict) -> None:
    for key in ("threshold", "low", "high"):
        _get(op, key, float, "operating_point")
    for key in ("min_duration_s", "merge_gap_s"):
        if _get(op, key, float, "operating_point") < 0:
            raise DataError(f"operating_point.{key} must be >= 0")
    for key in ("video_threshold", "target_false_alarm_rate"):
        _optional_unit(op, key, "operating_point")
    if "method" in op and op["method"] not in OPERATING_POINT_SOURCES:
        raise DataError(
            f"operating_point.method must be one of {', '.join(OPERATING_POINT_SOURCES)}, got {op['method']!r}"
        )
    for key in ("video_calibration", "interval_calibration"):
        if op.get(key) is not None:
            try:
                ScoreCalibrator.from_dict(op[key])
            except (TypeError, ValueError) as exc:
                raise DataError(f"operating_point.{key} is not a calibrator: {exc}") from None


def validate_document(doc: dict[str, Any]) -> None:
    """Check a loaded intervals document against schema version 1; raise DataError on the first
    problem, naming where it is (e.g. ``videos[0].intervals[2].end_frame``)."""
    version = _get(doc, "schema_version", int, "document")
    if version != SCHEMA_VERSION:
        raise DataError(f"document.schema_version is {version}, this vadpipe reads {SCHEMA_VERSION}")
    _validate_operating_point(_get(doc, "operating_point", dict, "document"))
    videos = _get(doc, "videos", list, "document")
    for v_i, video in enumerate(videos):
        where = f"videos[{v_i}]"
        _get(video, "source", str, where)
        duration = _get(video, "duration_s", float, where)
        if _get(video, "fps", float, where) <= 0:
            raise DataError(f"{where}.fps must be > 0")
        n_frames = _get(video, "n_frames", int, where)
        if _get(video, "clip_len", int, where) < 1:
            raise DataError(f"{where}.clip_len must be >= 1")
        if duration < 0 or n_frames < 0:
            raise DataError(f"{where}: duration_s and n_frames must be >= 0")
        _unit(video, "video_score", where)
        _optional_unit(video, "video_probability", where)
        previous = -math.inf
        for c_i, clip in enumerate(_get(video, "clips", list, where)):
            cw = f"{where}.clips[{c_i}]"
            start = _get(clip, "start_s", float, cw)
            if start < previous:
                raise DataError(f"{cw}.start_s {start} is before the previous clip's {previous}")
            previous = start
            for key in ("attention", "tcam", "wtcam"):
                _unit(clip, key, cw)
        previous_end = 0
        for i_i, interval in enumerate(_get(video, "intervals", list, where)):
            iw = f"{where}.intervals[{i_i}]"
            s = _get(interval, "start_frame", int, iw)
            e = _get(interval, "end_frame", int, iw)
            if not 0 <= s < e <= n_frames:
                raise DataError(f"{iw}: frames [{s}, {e}) must satisfy 0 <= start < end <= {n_frames}")
            if s < previous_end:
                raise DataError(f"{iw} starts at frame {s}, before the previous interval ends")
            previous_end = e
            s_s = _get(interval, "start_s", float, iw)
            e_s = _get(interval, "end_s", float, iw)
            if s_s > e_s:  # equal only with duplicated timestamps in the source
                raise DataError(f"{iw}: start_s {s_s} is after end_s {e_s}")
            _unit(interval, "score", iw)
            _optional_unit(interval, "calibrated_score", iw)
        validate_ood_entry(video.get("ood"), f"{where}.ood", n_clips=len(video["clips"]))


def write_intervals(path: str | os.PathLike, doc: IntervalsDocument | dict[str, Any]) -> Path:
    """Validate and atomically write an intervals document (a dataclass or its dict)."""
    obj = document_to_dict(doc) if isinstance(doc, IntervalsDocument) else doc
    validate_document(obj)
    atomic_write_text(Path(path), json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return Path(path)
