"""``watch`` orchestration: live sources -> clips -> one shared I3D -> online scores -> events.

One `StreamReader` thread per camera fills that camera's bounded `ClipQueue`; the calling
thread gathers clips of all cameras round-robin into one batch for I3D (this is how one device
serves many cameras), then scores each clip online (`vadpipe.watch_scoring.SegmentScoring`: the
same numbers as detect's full-rate scoring, and the live curve) and runs the interval state machine
per camera (`vadpipe.watch_events.CameraEvents`, which also stamps and sends the events).

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

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vadpipe.errors import ConfigError
from vadpipe.extract.encoder import ClipEncoder
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.extract.sources import SourceSpec
from vadpipe.extract.stream import ClipItem, ClipQueue, StreamReader
from vadpipe.hooks import EventSink
from vadpipe.model.ood import load_distance
from vadpipe.model.run import Run
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.ood import VideoOOD, cannot_judge_line, outside_line
from vadpipe.watch_events import CameraEvents, CameraStatus
from vadpipe.watch_scoring import SegmentScoring

__all__ = ["WatchConfig", "Watch", "measure_throughput"]


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


class _Camera:
    def __init__(self, spec: SourceSpec, reader: StreamReader, queue: ClipQueue, events: CameraEvents) -> None:
        self.spec = spec
        self.reader = reader
        self.queue = queue
        self.events = events
        self.segment: SegmentScoring | None = None
        self.status = events.status
        self.finished = False
        self.scored: deque[float] = deque(maxlen=30)  # monotonic times of scored clips


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
            events = CameraEvents(
                spec.name,
                reader=reader,
                queue=q,
                status=CameraStatus(spec.name),
                op=operating_point,
                sinks=self.sinks,
                log=log,
                save_clips=config.save_clips,
                pre_roll_s=config.pre_roll_s,
                post_roll_s=config.post_roll_s,
                update_every_s=config.update_every_s,
            )
            self.cameras.append(_Camera(spec, reader, q, events))
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
        scored = seg.push(item, features)
        if scored.footage is not None:
            self._judge_footage(cam, seg, scored.footage)
        score = scored.score
        cam.scored.append(time.monotonic())
        cam.status.clips += 1
        cam.status.score = score.wtcam
        if self.on_clip is not None:
            self.on_clip(
                {
                    "camera": cam.spec.name,
                    "segment": seg.index,
                    "row": score.row,
                    "start_frame": item.start_frame,
                    "start_s": seg.times[item.start_frame],
                    "attention": score.attention,
                    "tcam": score.tcam,
                    "wtcam": score.wtcam,
                    "attention_crops": score.attention_crops.tolist(),
                    "tcam_crops": score.tcam_crops.tolist(),
                    **({"gate_score": scored.gate} if self.op.video_threshold > 0 else {}),
                }
            )
        cam.events.frames(seg, scored.frames)
        cam.events.maybe_update(seg)

    def _judge_footage(self, cam: _Camera, seg: SegmentScoring, changed: VideoOOD) -> None:
        """An ``ood`` event when the trailing window turns unlike the training footage, or back."""
        cam.events.footage(seg, changed)
        if not changed.outside or self.config.ood == "ignore":
            return
        line = outside_line(f"{cam.spec.name} (last {len(changed.clip_distances)} clips)", changed)
        if self.config.ood == "error":
            self.log(f"error: {line}")
            self.outside_error = True
            self.stop()
        else:
            self.log(f"warning: {line}")

    def _control(self, cam: _Camera, message: tuple) -> None:
        kind = message[0]
        if kind == "segment":
            _, index, times, info = message
            if cam.segment is not None:
                self._close_segment(cam, "superseded")
            config = self.config
            cam.segment = SegmentScoring(
                index,
                times,
                info,
                run=self.run,
                op=self.op,
                settings=self.settings,
                block_len=self.block_len,
                window=config.gate_window,
                settle=config.settle,
                history_clips=config.history_clips,
                distance=self.distance,
            )
            cam.events.open_segment(cam.segment)
            cam.status.state = "live"
        elif kind == "segment_end":
            self._close_segment(cam, message[2])
        elif kind == "gap":
            _, lost, back, reason = message
            cam.events.gap(lost, back, reason)
        elif kind == "failed":
            cam.status.state = "failed"
            cam.status.error = message[1]
            self.log(f"error: {message[1]}")
            cam.events.emit(None, {"event": "error", "message": message[1]})
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
        cam.events.close_segment(seg, reason, source=cam.spec.location)

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
