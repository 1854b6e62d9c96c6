"""Frame curve -> source-frame intervals with real times: how an intervals document's entries are cut.

Times come from the real presentation time of every decoded frame (float64 ``(n_frames,)``,
the cache's ``S.times.npy``), never from ``frame / fps``, so variable-frame-rate files are right.
The document these entries go into is `vadpipe.postprocess.intervals`'s.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from vadpipe.errors import ConfigError, DataError
from vadpipe.postprocess.intervals import ClipRecord, Interval, OperatingPoint, VideoIntervals
from vadpipe.postprocess.proposals import (
    Proposal,
    find_proposals,
    interpolate_to_frames,
    merge_proposals,
)

__all__ = [
    "curve_to_source_frames",
    "end_time_s",
    "frame_span_to_seconds",
    "intervals_from_curve",
    "build_video_intervals",
]


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
