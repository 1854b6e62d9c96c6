"""Live events from per-clip scores: a causal frame curve and an interval state machine.

Offline, the frame curve is ``scipy.ndimage.zoom(ψ, clip_len, order=3)`` over the whole video:
a cubic B-spline that is *corner-aligned*, so frame ``i`` samples clip coordinate
``i (T-1)/(clip_len T - 1)``, which depends on the video's final length ``T``. No live curve can
equal it before the stream ends. `OnlineCurve` uses the same spline (order 3, mirror boundary,
the same clipping to [low, high]) at the coordinates that the offline mapping tends to on a long
video, ``k + j/clip_len`` for frame ``j`` of clip ``k``; it is drawn ``settle`` clips behind the
newest clip (the spline needs the next values). Boundaries then differ from detect's by less
than one clip (the offline drift, ``≤ (clip_len-1)/clip_len`` clip at the end of a video).
The exact detect intervals of a finished segment come with its ``summary`` event
(`vadpipe.pipeline` builds it with `vadpipe.postprocess.frame_intervals.build_video_intervals`).

`EventTracker` turns the curve into intervals by detect's rules, one frame at a time: runs of
frames strictly above the threshold; a run starting at most ``merge_gap_s`` seconds after the
previous one ended is merged into it (score = mean of the curve over the merged span); an
interval is announced (``start``) at its first frame where it is at least ``min_duration_s`` long
and, with a video gate, the trailing-window video score of that frame's clip is at or above the
gate; ``end`` is emitted when no later run can merge any more, or when the segment ends. An
interval the gate kept closed over every frame above the threshold is never announced (offline,
a gated video reports no interval); once announced, it runs to its end whatever the gate does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from vadpipe.errors import ConfigError

__all__ = ["OnlineCurve", "CurveFrame", "EventTracker", "OpenInterval"]


@dataclass(frozen=True)
class CurveFrame:
    """One frame of the live curve: source frame index (in the segment), value, clip row."""

    frame: int
    value: float
    row: int


class OnlineCurve:
    """Per-clip ψ values in, frame-rate curve values out, ``settle`` clips behind.

    Args:
        clip_len: frames per clip.
        low, high: clipping as in `vadpipe.postprocess.proposals.interpolate_to_frames`.
        settle: clips of look-ahead before a clip's frames are drawn (0 = at once, from a
            mirrored end; 2 makes the spline within ~1% of its value with all future clips).
        context: past clips kept for the spline's left side.
    """

    def __init__(
        self, *, clip_len: int = 16, low: float = 0.05, high: float = 1.0, settle: int = 2, context: int = 8
    ) -> None:
        if settle < 0 or context < 1:
            raise ConfigError(f"settle must be >= 0 and context >= 1, got {settle} and {context}")
        self.clip_len = clip_len
        self.low, self.high = low, high
        self.settle = settle
        self._values: deque[tuple[int, int, float]] = deque(maxlen=context + settle + 1)  # (row, start, ψ)
        self._drawn = 0  # rows whose frames are out

    def push(self, row: int, start_frame: int, wtcam: float) -> list[CurveFrame]:
        self._values.append((row, start_frame, float(wtcam)))
        out: list[CurveFrame] = []
        while self._drawn <= row - self.settle:
            out += self._draw(self._drawn)
        return out

    def finish(self) -> list[CurveFrame]:
        """Draw the remaining clips with the true end of the segment as the right boundary."""
        out: list[CurveFrame] = []
        last = self._values[-1][0] if self._values else -1
        while self._drawn <= last:
            out += self._draw(self._drawn)
        return out

    def _draw(self, row: int) -> list[CurveFrame]:
        rows = [r for r, _, _ in self._values]
        values = np.array([v for _, _, v in self._values], dtype=np.float32)
        i = rows.index(row)
        start = self._values[i][1]
        if values.size == 1:
            frames = np.repeat(values, self.clip_len)
        else:
            coords = i + np.arange(self.clip_len, dtype=np.float64) / self.clip_len
            frames = scipy.ndimage.map_coordinates(values, coords[None], order=3, mode="mirror")
        frames[frames < self.low] = 0
        frames[frames > self.high] = 1
        self._drawn = row + 1
        return [CurveFrame(start + j, float(v), row) for j, v in enumerate(frames)]


@dataclass
class OpenInterval:
    """The interval being tracked: frames ``[start_frame, end_frame)``; sums for its mean score."""

    start_frame: int
    start_s: float
    end_frame: int  # one past the last frame above the threshold
    total: float  # curve sum from start_frame up to the newest frame seen
    total_at_end: float  # curve sum over [start_frame, end_frame)
    peak: float
    announced: bool = False
    closing: bool = False  # below the threshold since end_frame
    gate_open: bool = True  # the video gate at its latest frame above the threshold

    def score(self) -> float:
        return self.total_at_end / max(self.end_frame - self.start_frame, 1)


class EventTracker:
    """Detect's interval rules applied frame by frame; returns plain event dicts.

    Args:
        threshold, min_duration_s, merge_gap_s, video_threshold: the operating point.
        time_of: source frame index (in the segment) -> presentation time in seconds.
    """

    def __init__(
        self,
        *,
        threshold: float,
        min_duration_s: float = 0.0,
        merge_gap_s: float = 0.0,
        video_threshold: float = 0.0,
        time_of: Callable[[int], float],
    ) -> None:
        self.threshold = threshold
        self.min_duration_s = min_duration_s
        self.merge_gap_s = merge_gap_s
        self.video_threshold = video_threshold
        self.time_of = time_of
        self.current: OpenInterval | None = None
        self.last_value = 0.0
        self.last_s = 0.0  # stream time of the latest frame fed

    def feed(self, frame: CurveFrame, *, gate_score: float) -> list[dict]:
        """One curve frame; ``gate_score`` is the trailing-window video score at its clip."""
        events: list[dict] = []
        v = frame.value
        self.last_value = v
        iv = self.current
        t = self.last_s = self.time_of(frame.frame)
        if iv is not None and iv.closing and v > self.threshold:
            iv.closing = t - self._end_s(iv) > self.merge_gap_s  # False: merged into the open interval
            if iv.closing:
                events += self._close(iv, end_s=self._end_s(iv))
                iv = None
        if iv is not None and iv.closing and t - self._end_s(iv) > self.merge_gap_s:
            events += self._close(iv, end_s=self._end_s(iv))
            iv = None
        if v > self.threshold:
            if iv is None:
                iv = self.current = OpenInterval(frame.frame, t, frame.frame + 1, v, v, v)
            else:
                iv.total += v
                iv.total_at_end = iv.total
                iv.end_frame = frame.frame + 1
                iv.peak = max(iv.peak, v)
                iv.closing = False
            iv.gate_open = gate_score >= self.video_threshold
            if not iv.announced and t - iv.start_s >= self.min_duration_s and iv.gate_open:
                iv.announced = True
                events.append(
                    {"event": "start", "start_frame": iv.start_frame, "start_s": iv.start_s, "stream_s": t, "score": v}
                )
        elif iv is not None:
            iv.total += v
            iv.closing = True
        return events

    def _end_s(self, iv: OpenInterval) -> float:
        return self.time_of(iv.end_frame)

    def _close(self, iv: OpenInterval, *, end_s: float) -> list[dict]:
        self.current = None
        if not iv.announced and end_s - iv.start_s >= self.min_duration_s and iv.gate_open:
            iv.announced = True
            yield_start = {
                "event": "start",
                "start_frame": iv.start_frame,
                "start_s": iv.start_s,
                "stream_s": end_s,
                "score": iv.peak,
            }
            return [yield_start, self._end_event(iv, end_s)]
        if not iv.announced:
            return []
        return [self._end_event(iv, end_s)]

    def _end_event(self, iv: OpenInterval, end_s: float) -> dict:
        return {
            "event": "end",
            "start_frame": iv.start_frame,
            "end_frame": iv.end_frame,
            "start_s": iv.start_s,
            "end_s": end_s,
            "stream_s": end_s,
            "score": iv.score(),
            "peak": iv.peak,
        }

    def finish(self, *, end_s_of_segment: Callable[[int], float]) -> list[dict]:
        """Close the open interval at the end of the segment (stream end, gap, shutdown)."""
        iv = self.current
        if iv is None:
            return []
        return self._close(iv, end_s=end_s_of_segment(iv.end_frame))
