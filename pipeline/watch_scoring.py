"""Scoring of one connection (segment) of one watched camera: features in, scores and curve frames out.

`SegmentScoring` holds what `vadpipe.watch.Watch` needs per segment to score clips as they come
(`OnlineScorer`, the same numbers as detect's full-rate scoring), draw the live curve
(`OnlineCurve`), gate it (the trailing-window video score), judge the footage against the
training set (`LiveJudge`) and, when the segment ends, give exactly what ``vadpipe detect``
reports for its frames (the ``summary`` event). Events are tracked by `vadpipe.watch_events`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vadpipe.extract.settings import ExtractionSettings
from vadpipe.extract.stream import ClipItem, FrameTimes
from vadpipe.model.ood import FeatureDistance
from vadpipe.model.run import Run
from vadpipe.model.scoring import combine_crops
from vadpipe.postprocess.events import CurveFrame, OnlineCurve
from vadpipe.postprocess.frame_intervals import build_video_intervals
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.online import OnlineClipScore, OnlineScorer, SegmentHistory
from vadpipe.postprocess.ood import LiveJudge, VideoOOD

__all__ = ["ScoredClip", "SegmentScoring"]


@dataclass(frozen=True)
class ScoredClip:
    """One clip scored: its scores, the gate score of its row (1.0 without a gate), the curve
    frames it let be drawn, and the footage judgement when it changed (None: no change)."""

    score: OnlineClipScore
    gate: float
    frames: tuple[CurveFrame, ...]
    footage: VideoOOD | None


class SegmentScoring:
    """Scoring state of one connection of one camera.

    Args:
        index: the segment's number on its camera.
        times: presentation times of its frames (filled as frames arrive).
        info: what the reader knows of the stream (``fps``, ...).
        window: clips in the trailing window of the live video gate and the footage judge.
        settle: clips the live curve waits for before drawing a clip.
        history_clips: clips kept for the exact summary.
        distance: the run's outside-footage check (None: it cannot judge).
    """

    def __init__(
        self,
        index: int,
        times: FrameTimes,
        info: dict,
        *,
        run: Run,
        op: OperatingPoint,
        settings: ExtractionSettings,
        block_len: int,
        window: int,
        settle: int,
        history_clips: int,
        distance: FeatureDistance | None = None,
    ) -> None:
        self.index = index
        self.times = times
        self.info = info
        self.run = run
        self.op = op
        self.clip_len = settings.clip_len
        self.scorer = OnlineScorer(run.model, block_len=block_len, window=window)
        self.curve = OnlineCurve(clip_len=settings.clip_len, low=op.low, high=op.high, settle=settle)
        self.history = SegmentHistory(block_len=block_len, max_clips=history_clips)
        self.ood = LiveJudge(distance, window=window) if distance is not None else None
        self.gate: deque[tuple[int, float]] = deque(maxlen=settle + 8)  # (row, gate score)
        self.arrivals: deque[tuple[int, int, float, float]] = deque(maxlen=settle + 64)

    def push(self, item: ClipItem, features: np.ndarray) -> ScoredClip:
        """Score one clip of this segment (its crops' features) and draw what the curve can."""
        score = self.scorer.push(features)
        self.history.add(score, features, item.start_frame)
        footage = self.ood.push(features) if self.ood is not None else None
        gate = self.scorer.window_video_score() if self.op.video_threshold > 0 else 1.0
        self.gate.append((score.row, gate))
        end_frame = item.start_frame + self.clip_len - 1
        wall = time.time() - (time.monotonic() - item.arrived)
        self.arrivals.append((item.start_frame, end_frame, wall, self.times[end_frame]))
        frames = self.curve.push(score.row, item.start_frame, score.wtcam)
        return ScoredClip(score, gate, tuple(frames), footage)

    def finish(self) -> list[CurveFrame]:
        """The curve frames left when the segment ends (its times closed)."""
        if not self.times.ended:
            self.times.close()
        return self.curve.finish()

    def time_of(self, frame: int) -> float:
        return self.times[frame]

    def end_time(self, frame: int) -> float:
        """Time of ``frame``, or the segment's end when it is one past the last frame."""
        if frame >= len(self.times):
            return self.times.end_s if self.times.end_s is not None else self.times[len(self.times) - 1]
        return self.times[frame]

    def gate_at(self, row: int) -> float:
        for r, g in reversed(self.gate):
            if r <= row:
                return g
        return 1.0

    def arrival_of(self, frame: int) -> float | None:
        """Wall time (time.time) when ``frame`` arrived, from its clip's arrival."""
        for start, end_frame, arrived_wall, end_t in reversed(self.arrivals):
            if start <= frame <= end_frame:
                return arrived_wall - (end_t - self.times[frame])
        return None

    def summary(self, *, reason: str, source: str, dropped: int) -> dict[str, Any]:
        """The ``summary`` event: with ``video_score`` and ``intervals`` exactly detect's for the
        segment's frames, or null when clips were dropped or it outgrew the kept history."""
        summary = {
            "event": "summary",
            "reason": reason,
            "clips": len(self.history),
            "frames": len(self.times),
            "dropped_clips": dropped,
            "video_score": None,
            "intervals": None,
            "ood": None
            if self.ood is None
            else {
                "share_outside": round(self.ood.beyond / self.ood.seen, 4) if self.ood.seen else 0.0,
                "clips": self.ood.seen,
                "outside_training": self.ood.outside,
            },
        }
        if len(self.history) == 0 or not self.history.complete or not self.times.complete or dropped:
            return summary
        att, tc, wtcam = combine_crops(*self.history.final_scores(self.run.model))
        video_score = self.history.final_video_score(self.run.model, self.scorer)
        times = self.times.array()
        fps = self.info.get("fps") or (1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 25.0)
        entry = build_video_intervals(
            source=source,
            attention=att,
            tcam=tc,
            wtcam=wtcam,
            video_score=video_score,
            start_frames=np.asarray(self.history.start_frames),
            clip_len=self.clip_len,
            frame_times_s=times,
            duration_s=self.times.end_s,
            fps=fps,
            video_end_s=self.times.end_s,
            operating_point=self.op,
        )
        summary["video_score"] = video_score
        summary["intervals"] = [asdict(i) for i in entry.intervals]
        return summary
