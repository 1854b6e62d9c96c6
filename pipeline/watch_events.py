"""Events of one watched camera: the interval state machine per segment, and the events sent out.

`CameraEvents` turns a segment's curve frames into ``start`` / ``end`` events (`EventTracker`,
detect's rules), adds the ``update``, ``ood``, ``gap``, ``error`` and ``summary`` events, stamps
every event (camera, wall time, segment, dropped clips, latency), records each event's clip with
``--save-clips`` and hands the events to the sinks. Scores come from `vadpipe.watch_scoring`;
the event format is documented in `vadpipe.watch`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vadpipe.extract.stream import ClipQueue, StreamReader
from vadpipe.hooks import EventSink
from vadpipe.postprocess.events import CurveFrame, EventTracker
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.ood import VideoOOD
from vadpipe.watch_scoring import SegmentScoring

__all__ = ["CameraStatus", "CameraEvents"]


@dataclass
class CameraStatus:
    """What the live panel shows for one camera."""

    name: str
    state: str = "connecting"
    score: float | None = None
    fps_in: float = 0.0
    clips_per_s: float = 0.0
    clips: int = 0
    dropped: int = 0
    last_event: str = ""
    error: str | None = None


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CameraEvents:
    """Event tracking and output of one camera, over its segments.

    Args:
        name: the camera's name (every event's ``camera``).
        reader, queue: the camera's reader (clip recordings) and clip queue (dropped clips).
        status: the camera's panel line (``last_event`` is kept here).
        op: the operating point the intervals follow.
        sinks: where events go; log: human messages (a sink that fails is reported there).
        save_clips: folder for each event's MP4 (None: no clips); pre_roll_s, post_roll_s:
            footage kept before the start and after the end.
        update_every_s: ``update`` events this often while an interval is open (0: never).
    """

    def __init__(
        self,
        name: str,
        *,
        reader: StreamReader,
        queue: ClipQueue,
        status: CameraStatus,
        op: OperatingPoint,
        sinks: list[EventSink],
        log: Callable[[str], None],
        save_clips: Path | None,
        pre_roll_s: float,
        post_roll_s: float,
        update_every_s: float,
    ) -> None:
        self.name = name
        self.reader = reader
        self.queue = queue
        self.status = status
        self.op = op
        self.sinks = sinks
        self.log = log
        self.save_clips = save_clips
        self.pre_roll_s = pre_roll_s
        self.post_roll_s = post_roll_s
        self.update_every_s = update_every_s
        self.segment_offset_s = 0.0  # camera time of the current segment's start
        self.tracker: EventTracker | None = None
        self.dropped_at_start = 0
        self.event_key: str | None = None
        self.last_update = 0.0

    def open_segment(self, seg: SegmentScoring) -> None:
        """A new connection: a fresh interval state machine on its frame times."""
        op = self.op
        self.tracker = EventTracker(
            threshold=op.threshold,
            min_duration_s=op.min_duration_s,
            merge_gap_s=op.merge_gap_s,
            video_threshold=op.video_threshold,
            time_of=seg.time_of,
        )
        self.dropped_at_start = self.queue.dropped
        self.event_key = None
        self.last_update = 0.0

    def frames(self, seg: SegmentScoring, frames: Iterable[CurveFrame]) -> None:
        """Feed curve frames to the state machine, emitting the events they decide."""
        for frame in frames:
            for event in self.tracker.feed(frame, gate_score=seg.gate_at(frame.row)):
                self.emit(seg, event)

    def maybe_update(self, seg: SegmentScoring) -> None:
        iv = self.tracker.current
        every = self.update_every_s
        if not every or iv is None or not iv.announced or time.monotonic() - self.last_update < every:
            return
        self.last_update = time.monotonic()
        self.emit(
            seg,
            {
                "event": "update",
                "start_frame": iv.start_frame,
                "start_s": iv.start_s,
                "stream_s": self.tracker.last_s,
                "score": self.tracker.last_value,
                "peak": iv.peak,
            },
        )

    def footage(self, seg: SegmentScoring, changed: VideoOOD) -> None:
        """The ``ood`` event: the trailing window turned unlike the training footage, or back."""
        self.emit(
            seg,
            {
                "event": "ood",
                "outside_training": changed.outside,
                "share_outside": round(changed.share_outside, 4),
                "window_clips": len(changed.clip_distances),
                "clip_threshold": changed.clip_threshold,
                "max_share": changed.max_share,
            },
        )

    def close_segment(self, seg: SegmentScoring, reason: str, *, source: str) -> None:
        """The segment ended: draw the rest of its curve, end any open interval, send its summary."""
        self.frames(seg, seg.finish())
        for event in self.tracker.finish(end_s_of_segment=seg.end_time):
            event["reason"] = reason
            self.emit(seg, event)
        self.emit(seg, seg.summary(reason=reason, source=source, dropped=self.queue.dropped - self.dropped_at_start))

    def gap(self, lost: float, back: float, reason: str) -> None:
        """The source dropped at wall time ``lost`` and came back at ``back``."""
        self.segment_offset_s += back - lost
        self.emit(
            None,
            {
                "event": "gap",
                "from_wall": _iso(lost),
                "to_wall": _iso(back),
                "missing_s": round(back - lost, 3),
                "reason": reason,
            },
        )

    def emit(self, seg: SegmentScoring | None, event: dict) -> None:
        """Stamp an event and send it to every sink."""
        event = {
            "event": event.pop("event"),
            "camera": self.name,
            "wall_time": _now_iso(),
            **({"segment": seg.index} if seg is not None else {}),
            **event,
        }
        kind = event["event"]
        if seg is not None and kind in ("start", "end", "update"):
            event["dropped_clips"] = self.queue.dropped
            event["camera_s"] = round(self.segment_offset_s + event.get("stream_s", event["start_s"]), 3)
        if kind == "start" and seg is not None:
            arrived = seg.arrival_of(event["start_frame"])
            event["latency_s"] = round(time.time() - arrived, 3) if arrived is not None else None
            if self.save_clips is not None:
                stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
                path = self.save_clips / f"{self.name}-{stamp}-s{seg.index}-f{event['start_frame']}.mp4"
                recording = self.reader.record(
                    path.name, path, segment=seg.index, from_s=event["start_s"] - self.pre_roll_s
                )
                self.event_key = path.name if recording else None
                event["clip"] = str(path) if recording else None
        if kind == "end" and seg is not None and self.event_key is not None:
            self.reader.stop_recording(self.event_key, until_s=event["end_s"] + self.post_roll_s)
            event["clip"] = str(self.save_clips / self.event_key)
            self.event_key = None
        if kind == "start":
            self.status.last_event = f"start at {event['start_s']:.1f}s"
        elif kind == "end":
            self.status.last_event = f"end {event['start_s']:.1f}-{event['end_s']:.1f}s ({event['score']:.2f})"
        elif kind == "gap":
            self.status.last_event = f"gap {event['missing_s']:.1f}s"
        elif kind == "error":
            self.status.last_event = "error"
        for sink in self.sinks:
            try:
                sink.send(event)
            except Exception as exc:  # an events file that fails is reported, the watch goes on
                self.log(f"warning: could not write a {kind} event: {exc}")
