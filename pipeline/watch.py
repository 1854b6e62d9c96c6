"""``watch`` orchestration: live sources -> clips -> one shared I3D -> online scores -> events.

One `StreamReader` thread per camera fills that camera's bounded `ClipQueue`; the calling
thread gathers clips of all cameras round-robin into one batch for I3D (this is how one device
serves many cameras), then scores each clip online (`OnlineScorer`, the same numbers as detect's
full-rate scoring), draws the live curve and runs the interval state machine per camera.

Lag policy: at start the I3D throughput is measured on a dummy batch and compared with the clips
per second the cameras need; live sources whose clips cannot be computed in time have their
*oldest queued clip* dropped whole (never part of a clip), so latency stays bounded by the queue
length and memory stays flat. Dropped clips are left out of that camera's sequence (as if those
frames had not been seen) and counted in the panel, the events (``dropped_clips``) and the
segment summary. A file without ``--realtime`` is never dropped: it is read as fast as clips
are computed.

Events (one JSON object each; every one has ``event``, ``camera``, ``wall_time`` (UTC ISO 8601)):

* ``start``: an interval opened: ``segment``, ``start_frame``, ``start_s`` (stream time),
  ``stream_s`` (stream time when it was decided), ``score``, ``latency_s`` (from the arrival of
  its first frame), ``dropped_clips``, ``clip`` (its MP4 with --save-clips; null when the
  stream ended before the event was decided, so its packets are gone);
* ``update`` (with ``update_every_s``), only between an interval's ``start`` and ``end``:
  ``start_frame``, ``start_s`` (of the interval), ``stream_s`` (its newest frame), ``score`` (the
  curve there), ``peak`` so far;
* ``end``: ``start_frame``, ``end_frame`` (exclusive), ``start_s``, ``end_s``, ``score`` (mean
  of the curve over the interval), ``peak``, ``reason`` (``"below threshold"``, or why the
  segment ended);
* ``gap``: the source dropped and came back: ``from_wall``, ``to_wall``, ``missing_s``,
  ``reason``;
* ``summary``: a segment ended (stream end, gap, shutdown): ``clips``, ``dropped_clips``,
  ``video_score`` and ``intervals``: exactly what ``vadpipe detect`` reports for the frames of
  that segment (null when clips were dropped or it was longer than the kept history);
* ``error``: the camera failed (``message``), the others go on.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vadpipe.errors import ConfigError
from vadpipe.extract.encoder import ClipEncoder
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.extract.stream import ClipItem, ClipQueue, FrameTimes, SourceSpec, StreamReader
from vadpipe.hooks import EventSink
from vadpipe.model.ood import FeatureDistance, load_distance
from vadpipe.model.run import Run
from vadpipe.postprocess.events import EventTracker, OnlineCurve
from vadpipe.postprocess.frame_intervals import build_video_intervals
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.online import OnlineScorer, SegmentHistory
from vadpipe.postprocess.ood import LiveJudge, cannot_judge_line, outside_line
from vadpipe.postprocess.scores import combine_crops

__all__ = ["WatchConfig", "CameraStatus", "Watch", "measure_throughput"]


@dataclass(frozen=True)
class WatchConfig:
    """How the watch runs (the operating point comes separately, from the run or the user).

    Attributes:
        batch_size: crops per I3D forward, gathered across cameras.
        queue_clips: clips queued per camera before the lag policy applies.
        lag: ``"auto"`` (drop for live sources, wait for files), ``"drop"`` or ``"wait"``.
        settle: clips the live curve waits for before drawing a clip (see `OnlineCurve`).
        gate_window: clips in the trailing window of the live video gate.
        save_clips: folder for each event's MP4 (None: no clips).
        pre_roll_s, post_roll_s: footage kept before the start and after the end of an event.
        reconnect: reconnect dropped URL/device sources; reconnect_for_s: give up after this
            much outage (0: never).
        update_every_s: emit ``update`` events this often while an interval is open (0: never).
        history_clips: clips per segment kept for the exact summary.
        ood: footage unlike the training set over the trailing ``gate_window`` clips: ``warn``
            (an ``ood`` event and a warning line), ``error`` (the same, then the watch stops and
            the command exits 2) or ``ignore`` (the ``ood`` event only).
    """

    batch_size: int = 8
    queue_clips: int = 4
    lag: str = "auto"
    settle: int = 2
    gate_window: int = 64
    save_clips: Path | None = None
    pre_roll_s: float = 5.0
    post_roll_s: float = 3.0
    reconnect: bool = True
    reconnect_for_s: float = 0.0
    open_timeout_s: float = 10.0
    update_every_s: float = 0.0
    history_clips: int = 50_000
    ood: str = "warn"

    def __post_init__(self) -> None:
        if self.lag not in ("auto", "drop", "wait"):
            raise ConfigError(f"lag must be auto, drop or wait, got {self.lag!r}")
        if self.ood not in ("warn", "error", "ignore"):
            raise ConfigError(f"ood must be warn, error or ignore, got {self.ood!r}")
        for name in ("batch_size", "queue_clips", "gate_window", "history_clips"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pre_roll_s", "post_roll_s", "reconnect_for_s", "update_every_s", "open_timeout_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.settle < 0:
            raise ConfigError(f"settle must be >= 0 clips, got {self.settle}")


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class _Segment:
    """Scoring state of one connection of one camera."""

    def __init__(
        self,
        index: int,
        times: FrameTimes,
        info: dict,
        run: Run,
        op: OperatingPoint,
        settings: ExtractionSettings,
        config: WatchConfig,
        block_len: int,
        distance: FeatureDistance | None = None,
    ) -> None:
        self.index = index
        self.times = times
        self.info = info
        self.scorer = OnlineScorer(run.model, block_len=block_len, window=config.gate_window)
        self.curve = OnlineCurve(clip_len=settings.clip_len, low=op.low, high=op.high, settle=config.settle)
        self.tracker = EventTracker(
            threshold=op.threshold,
            min_duration_s=op.min_duration_s,
            merge_gap_s=op.merge_gap_s,
            video_threshold=op.video_threshold,
            time_of=self._time_of,
        )
        self.history = SegmentHistory(block_len=block_len, max_clips=config.history_clips)
        self.ood = LiveJudge(distance, window=config.gate_window) if distance is not None else None
        self.gate: deque[tuple[int, float]] = deque(maxlen=config.settle + 8)  # (row, gate score)
        self.arrivals: deque[tuple[int, int, float, float]] = deque(maxlen=config.settle + 64)
        self.dropped_at_start = 0
        self.event_key: str | None = None
        self.last_update = 0.0

    def _time_of(self, frame: int) -> float:
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


class _Camera:
    def __init__(self, spec: SourceSpec, reader: StreamReader, queue: ClipQueue) -> None:
        self.spec = spec
        self.reader = reader
        self.queue = queue
        self.segment: _Segment | None = None
        self.status = CameraStatus(spec.name)
        self.finished = False
        self.scored: deque[float] = deque(maxlen=30)  # monotonic times of scored clips
        self.segment_offset_s = 0.0  # camera time of the current segment's start


def _trim_heap() -> None:
    """Give glibc's free heap pages back to the system. Clips are allocated on the reader threads
    and freed on this one, a pattern under which glibc keeps free pages in its arenas (bench/live.py
    soak, 12 minutes: RSS +7.6 MB/min over the second half untrimmed; flat when trimmed)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def measure_throughput(encoder: ClipEncoder, settings: ExtractionSettings, *, batch_size: int) -> float:
    """Clips per second the encoder computes in batches of ``batch_size`` crops (one warm-up batch)."""
    n_crops = len(settings.crop_names)
    clips = max(1, batch_size // n_crops)
    x = torch.zeros(clips * n_crops, 3, settings.clip_len, settings.crop_size, settings.crop_size, dtype=torch.uint8)
    encoder(x)
    t0 = time.perf_counter()
    encoder(x)
    return clips / max(time.perf_counter() - t0, 1e-9)


class Watch:
    """Runs the cameras until they all end or `stop` is called (from a signal handler, say).

    Args:
        sources: the cameras.
        run: the trained run (model in eval mode).
        encoder: I3D on its device; settings: the run's extraction settings.
        operating_point: thresholds and interval filters (`OperatingPoint.for_run`).
        sinks: where events go.
        on_clip: called with every clip's scores (``--scores``).
        log: human messages (stderr).
    """

    def __init__(
        self,
        sources: list[SourceSpec],
        run: Run,
        encoder: ClipEncoder,
        settings: ExtractionSettings,
        operating_point: OperatingPoint,
        config: WatchConfig = WatchConfig(),
        *,
        block_len: int = 3,
        sinks: list[EventSink] = (),
        on_clip: Callable[[dict], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"camera names must be unique, {', '.join(dupes)} is used twice; name them in a config file"
            )
        if not sources:
            raise ConfigError("no sources to watch")
        self.run = run
        self.encoder = encoder
        self.settings = settings
        self.op = operating_point
        self.config = config
        self.block_len = block_len
        self.sinks = list(sinks)
        self.on_clip = on_clip
        self.log = log
        self.stop_event = threading.Event()
        self.capacity_clips_s: float | None = None
        self.cameras: list[_Camera] = []
        # the ring covers the pre-roll plus how far scoring may lag behind (queue, settle, a slow device)
        ring = (config.pre_roll_s + 60.0) if config.save_clips else 0.0
        for spec in sources:
            block = config.lag == "wait" or (config.lag == "auto" and not spec.live)
            q = ClipQueue(max_clips=config.queue_clips, block=block)
            reader = StreamReader(
                spec,
                settings,
                q,
                self.stop_event,
                reconnect=config.reconnect,
                reconnect_for_s=config.reconnect_for_s,
                open_timeout_s=config.open_timeout_s,
                read_timeout_s=max(config.open_timeout_s, 1.0),
                ring_s=ring,
            )
            self.cameras.append(_Camera(spec, reader, q))
        self._reported_lag = False
        self.distance = load_distance(run.path)
        self.outside_error = False  # --ood error fired: the command exits 2
        if self.distance is None and config.ood != "ignore":
            log(f"note: {cannot_judge_line(run.path)}")

    # --- public --------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def statuses(self) -> list[CameraStatus]:
        for cam in self.cameras:
            st = cam.status
            st.fps_in = cam.reader.stats.fps_in
            st.dropped = cam.queue.dropped
            if not cam.finished and st.state not in ("failed",):
                st.state = cam.reader.stats.state
            if len(cam.scored) > 1 and time.monotonic() - cam.scored[-1] < 10:
                st.clips_per_s = (len(cam.scored) - 1) / max(cam.scored[-1] - cam.scored[0], 1e-9)
            else:
                st.clips_per_s = 0.0
        return [c.status for c in self.cameras]

    def run_until_done(self, *, on_tick: Callable[[], None] | None = None) -> None:
        """The compute loop; returns when every camera is finished or after `stop` (events closed)."""
        self.capacity_clips_s = measure_throughput(self.encoder, self.settings, batch_size=self.config.batch_size)
        for cam in self.cameras:
            cam.reader.start()
        last_tick = last_trim = time.monotonic()
        try:
            while not self.stop_event.is_set():
                batch = self._gather()
                if batch:
                    self._compute(batch)
                elif all(c.finished for c in self.cameras):
                    break
                else:
                    self.stop_event.wait(0.01)
                self._report_lag()
                if time.monotonic() - last_trim > 60:
                    last_trim = time.monotonic()
                    _trim_heap()
                if on_tick is not None and time.monotonic() - last_tick > 0.25:
                    last_tick = time.monotonic()
                    on_tick()
        finally:
            self._shutdown()

    # --- the loop ------------------------------------------------------------------------------
    def _gather(self) -> list[tuple[_Camera, ClipItem]]:
        batch: list[tuple[_Camera, ClipItem]] = []
        n_crops = len(self.settings.crop_names)
        blocked: set[int] = set()
        while len(batch) * n_crops < self.config.batch_size:
            took = False
            for i, cam in enumerate(self.cameras):
                if i in blocked or cam.finished:
                    continue
                item = cam.queue.peek()
                if item is None:
                    continue
                if isinstance(item, ClipItem):
                    batch.append((cam, cam.queue.get()))
                    took = True
                    if len(batch) * n_crops >= self.config.batch_size:
                        break
                elif any(c is cam for c, _ in batch):
                    blocked.add(i)  # a control message after a clip waits until the clip is scored
                else:
                    self._control(cam, cam.queue.get())
                    took = True
            if not took:
                break
        return batch

    def _compute(self, batch: list[tuple[_Camera, ClipItem]]) -> None:
        n_crops = len(self.settings.crop_names)
        feats = self.encoder(torch.cat([item.crops for _, item in batch]))
        for k, (cam, item) in enumerate(batch):
            self._score(cam, item, feats[k * n_crops : (k + 1) * n_crops])

    def _score(self, cam: _Camera, item: ClipItem, features: np.ndarray) -> None:
        seg = cam.segment
        if seg is None or seg.index != item.segment:
            return  # a clip of a segment already closed (shutdown)
        score = seg.scorer.push(features)
        seg.history.add(score, features, item.start_frame)
        if seg.ood is not None:
            self._judge_footage(cam, seg, features)
        row = score.row
        gate = seg.scorer.window_video_score() if self.op.video_threshold > 0 else 1.0
        seg.gate.append((row, gate))
        end_frame = item.start_frame + self.settings.clip_len - 1
        wall = time.time() - (time.monotonic() - item.arrived)
        seg.arrivals.append((item.start_frame, end_frame, wall, seg.times[end_frame]))
        cam.scored.append(time.monotonic())
        cam.status.clips += 1
        cam.status.score = score.wtcam
        if self.on_clip is not None:
            self.on_clip(
                {
                    "camera": cam.spec.name,
                    "segment": seg.index,
                    "row": row,
                    "start_frame": item.start_frame,
                    "start_s": seg.times[item.start_frame],
                    "attention": score.attention,
                    "tcam": score.tcam,
                    "wtcam": score.wtcam,
                    "attention_crops": score.attention_crops.tolist(),
                    "tcam_crops": score.tcam_crops.tolist(),
                    **({"gate_score": gate} if self.op.video_threshold > 0 else {}),
                }
            )
        for frame in seg.curve.push(row, item.start_frame, score.wtcam):
            for event in seg.tracker.feed(frame, gate_score=seg.gate_at(frame.row)):
                self._emit(cam, seg, event)
        self._maybe_update(cam, seg)

    def _judge_footage(self, cam: _Camera, seg: _Segment, features: np.ndarray) -> None:
        """An ``ood`` event when the trailing window turns unlike the training footage, or back."""
        changed = seg.ood.push(features)
        if changed is None:
            return
        self._emit(
            cam,
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
        if not changed.outside or self.config.ood == "ignore":
            return
        line = outside_line(f"{cam.spec.name} (last {len(changed.clip_distances)} clips)", changed)
        if self.config.ood == "error":
            self.log(f"error: {line}")
            self.outside_error = True
            self.stop()
        else:
            self.log(f"warning: {line}")

    def _maybe_update(self, cam: _Camera, seg: _Segment) -> None:
        iv = seg.tracker.current
        every = self.config.update_every_s
        if not every or iv is None or not iv.announced or time.monotonic() - seg.last_update < every:
            return
        seg.last_update = time.monotonic()
        self._emit(
            cam,
            seg,
            {
                "event": "update",
                "start_frame": iv.start_frame,
                "start_s": iv.start_s,
                "stream_s": seg.tracker.last_s,
                "score": seg.tracker.last_value,
                "peak": iv.peak,
            },
        )

    def _control(self, cam: _Camera, message: tuple) -> None:
        kind = message[0]
        if kind == "segment":
            _, index, times, info = message
            if cam.segment is not None:
                self._close_segment(cam, "superseded")
            cam.segment = _Segment(
                index,
                times,
                info,
                self.run,
                self.op,
                self.settings,
                self.config,
                self.block_len,
                distance=self.distance,
            )
            cam.segment.dropped_at_start = cam.queue.dropped
            cam.status.state = "live"
        elif kind == "segment_end":
            self._close_segment(cam, message[2])
        elif kind == "gap":
            _, lost, back, reason = message
            cam.segment_offset_s += back - lost
            self._emit(
                cam,
                None,
                {
                    "event": "gap",
                    "from_wall": _iso(lost),
                    "to_wall": _iso(back),
                    "missing_s": round(back - lost, 3),
                    "reason": reason,
                },
            )
        elif kind == "failed":
            cam.status.state = "failed"
            cam.status.error = message[1]
            self.log(f"error: {message[1]}")
            self._emit(cam, None, {"event": "error", "message": message[1]})
        elif kind == "finished":
            if cam.segment is not None:
                self._close_segment(cam, "stopped")
            cam.finished = True
            if cam.status.state != "failed":
                cam.status.state = "ended"

    def _close_segment(self, cam: _Camera, reason: str) -> None:
        seg = cam.segment
        if seg is None:
            return
        cam.segment = None
        if not seg.times.ended:
            seg.times.close()
        for frame in seg.curve.finish():
            for event in seg.tracker.feed(frame, gate_score=seg.gate_at(frame.row)):
                self._emit(cam, seg, event)
        for event in seg.tracker.finish(end_s_of_segment=seg.end_time):
            event["reason"] = reason
            self._emit(cam, seg, event)
        self._emit(cam, seg, self._summary(cam, seg, reason))

    def _summary(self, cam: _Camera, seg: _Segment, reason: str) -> dict:
        dropped = cam.queue.dropped - seg.dropped_at_start
        summary = {
            "event": "summary",
            "reason": reason,
            "clips": len(seg.history),
            "frames": len(seg.times),
            "dropped_clips": dropped,
            "video_score": None,
            "intervals": None,
            "ood": None
            if seg.ood is None
            else {
                "share_outside": round(seg.ood.beyond / seg.ood.seen, 4) if seg.ood.seen else 0.0,
                "clips": seg.ood.seen,
                "outside_training": seg.ood.outside,
            },
        }
        if len(seg.history) == 0 or not seg.history.complete or not seg.times.complete or dropped:
            return summary
        att, tc, wtcam = combine_crops(*seg.history.final_scores(self.run.model))
        video_score = seg.history.final_video_score(self.run.model, seg.scorer)
        times = seg.times.array()
        fps = seg.info.get("fps") or (1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 25.0)
        entry = build_video_intervals(
            source=cam.spec.location,
            attention=att,
            tcam=tc,
            wtcam=wtcam,
            video_score=video_score,
            start_frames=np.asarray(seg.history.start_frames),
            clip_len=self.settings.clip_len,
            frame_times_s=times,
            duration_s=seg.times.end_s,
            fps=fps,
            video_end_s=seg.times.end_s,
            operating_point=self.op,
        )
        summary["video_score"] = video_score
        summary["intervals"] = [asdict(i) for i in entry.intervals]
        return summary

    def _emit(self, cam: _Camera, seg: _Segment | None, event: dict) -> None:
        event = {
            "event": event.pop("event"),
            "camera": cam.spec.name,
            "wall_time": _now_iso(),
            **({"segment": seg.index} if seg is not None else {}),
            **event,
        }
        kind = event["event"]
        if seg is not None and kind in ("start", "end", "update"):
            event["dropped_clips"] = cam.queue.dropped
            event["camera_s"] = round(cam.segment_offset_s + event.get("stream_s", event["start_s"]), 3)
        if kind == "start" and seg is not None:
            arrived = seg.arrival_of(event["start_frame"])
            event["latency_s"] = round(time.time() - arrived, 3) if arrived is not None else None
            if self.config.save_clips is not None:
                stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
                path = self.config.save_clips / f"{cam.spec.name}-{stamp}-s{seg.index}-f{event['start_frame']}.mp4"
                recording = cam.reader.record(
                    path.name, path, segment=seg.index, from_s=event["start_s"] - self.config.pre_roll_s
                )
                seg.event_key = path.name if recording else None
                event["clip"] = str(path) if recording else None
        if kind == "end" and seg is not None and seg.event_key is not None:
            cam.reader.stop_recording(seg.event_key, until_s=event["end_s"] + self.config.post_roll_s)
            event["clip"] = str(self.config.save_clips / seg.event_key)
            seg.event_key = None
        if kind == "start":
            cam.status.last_event = f"start at {event['start_s']:.1f}s"
        elif kind == "end":
            cam.status.last_event = f"end {event['start_s']:.1f}-{event['end_s']:.1f}s ({event['score']:.2f})"
        elif kind == "gap":
            cam.status.last_event = f"gap {event['missing_s']:.1f}s"
        elif kind == "error":
            cam.status.last_event = "error"
        for sink in self.sinks:
            try:
                sink.send(event)
            except Exception as exc:  # an events file that fails is reported, the watch goes on
                self.log(f"warning: could not write a {kind} event: {exc}")

    def _report_lag(self) -> None:
        if self._reported_lag or self.capacity_clips_s is None:
            return
        if not all(c.finished or c.segment is not None for c in self.cameras):
            return
        self._reported_lag = True
        needed = 0.0
        live = 0
        for cam in self.cameras:
            if cam.segment is None or not cam.spec.live:
                continue
            fps = cam.segment.info.get("fps") or 25.0
            needed += fps / self.settings.stride
            live += 1
        have = self.capacity_clips_s
        if live == 0:
            self.log(f"I3D on {self.encoder.device}: {have:.2f} clips/s; files are read as fast as that")
        elif needed <= have:
            self.log(
                f"{live} live camera(s) need {needed:.2f} clips/s; I3D on {self.encoder.device} does "
                f"{have:.2f} clips/s: real time ({have / needed:.1f}x headroom)"
            )
        elif any(c.queue.block for c in self.cameras if c.spec.live):
            self.log(
                f"warning: {live} live camera(s) need {needed:.2f} clips/s but I3D on {self.encoder.device} "
                f"does {have:.2f} clips/s; --lag wait: nothing is dropped, the watch falls behind"
            )
        else:
            self.log(
                f"warning: {live} live camera(s) need {needed:.2f} clips/s but I3D on {self.encoder.device} "
                f"does {have:.2f} clips/s: about {100 * (1 - have / needed):.0f}% of clips will be dropped "
                f"(whole clips, oldest queued first, counted per camera)"
            )

    def _shutdown(self) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + 10
        for cam in self.cameras:
            cam.reader.join(max(0.0, deadline - time.monotonic()))
        for cam in self.cameras:  # control messages left (segment ends); queued clips are not scored
            while (item := cam.queue.get()) is not None:
                if not isinstance(item, ClipItem):
                    self._control(cam, item)
            if cam.segment is not None:
                self._close_segment(cam, "stopped")
            cam.finished = True


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
