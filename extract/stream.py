"""Live sources cut into clips as they play: one reader thread per camera, URL, device or file.

One `StreamReader` thread per camera opens its source (``sources.input_options``, with an
open/read timeout), demuxes and decodes with PyAV/FFmpeg, turns frames into the extractor's
clips (`resize_frame` + `crop_clip`, the same geometry as ``vadpipe extract``) and hands them to
a bounded `ClipQueue`. Frame times are the presentation times relative to the stream's start (as
`vadpipe.extract.decode` computes them for files), so a stream and the same file give the same
clips at the same times.

A stream that drops or stalls after it played is reconnected with exponential backoff (0.5 s,
doubling, at most 10 s) until ``reconnect_for_s`` seconds of outage have passed; each
reconnection starts a new *segment* (frame indices and times restart, as for a new video) and is
reported as a ``gap``. A source that cannot be opened at all fails with one line. Every packet
goes to the reader's `Recorder` (``recorder``), so `StreamReader.record` can write an event's
footage, pre-roll included, as a fragmented MP4.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vadpipe.errors import DecodeError

from .decode import MIN_SIDE
from .recorder import Recorder
from .settings import ExtractionSettings
from .sources import SourceSpec, input_options
from .transforms import crop_clip, resize_frame

__all__ = ["FrameTimes", "ClipItem", "ClipQueue", "StreamReader"]


class FrameTimes:
    """Presentation times of a segment's frames, by frame index (appended by the reader thread).

    Keeps every time up to ``max_frames`` (what the segment summary needs); past that only the
    most recent ``keep`` and ``complete`` turns False (memory stays flat on endless streams).
    """

    def __init__(self, *, max_frames: int = 1_000_000, keep: int = 16_384) -> None:
        self._times = array("d")
        self._base = 0
        self.max_frames = max_frames
        self.keep = keep
        self.complete = True
        self.ended = False
        self.end_s: float | None = None  # when the last frame ends, once the segment has ended
        self._lock = threading.Lock()

    def append(self, t: float) -> None:
        with self._lock:
            self._times.append(t)
            if len(self._times) > self.max_frames:
                drop = len(self._times) - self.keep
                del self._times[:drop]
                self._base += drop
                self.complete = False

    def __len__(self) -> int:
        return self._base + len(self._times)

    def __getitem__(self, frame: int) -> float:
        with self._lock:
            i = frame - self._base
            if i < 0:
                raise IndexError(f"frame {frame} is older than the {len(self._times)} times kept")
            if i < len(self._times):
                return self._times[i]
        if self.ended and self.end_s is not None and frame == len(self):
            return self.end_s
        raise IndexError(f"frame {frame} has not arrived yet")

    def array(self) -> np.ndarray:
        with self._lock:
            return np.frombuffer(self._times, dtype=np.float64).copy()

    def close(self) -> None:
        with self._lock:
            n = len(self._times)
            step = (self._times[-1] - self._times[-2]) if n > 1 else 0.04
            self.end_s = (self._times[-1] + step) if n else 0.0
            self.ended = True


@dataclass
class ClipItem:
    """A clip ready for I3D: uint8 crops (n_crops, 3, T, S, S), where it starts, when it arrived."""

    segment: int
    start_frame: int
    crops: torch.Tensor
    arrived: float  # time.monotonic() when its last frame was decoded


class ClipQueue:
    """Bounded queue of clips and control messages of one camera.

    Clips beyond ``max_clips`` are dropped oldest first when ``block`` is False (live sources: the
    freshest footage matters) and counted in ``dropped``; with ``block`` the producer waits
    (a file read as fast as compute allows). Control messages (segment start/end, gap, failure)
    are never dropped and keep their order with the clips.
    """

    def __init__(self, *, max_clips: int = 4, block: bool = False) -> None:
        self.max_clips = max_clips
        self.block = block
        self.dropped = 0
        self._items: deque = deque()
        self._clips = 0
        self._cond = threading.Condition()

    def put_clip(self, clip: ClipItem, stop: threading.Event) -> None:
        with self._cond:
            while self._clips >= self.max_clips:
                if not self.block:
                    for i, item in enumerate(self._items):
                        if isinstance(item, ClipItem):
                            del self._items[i]
                            self._clips -= 1
                            self.dropped += 1
                            break
                    break
                if stop.is_set():
                    return
                self._cond.wait(0.2)
            self._items.append(clip)
            self._clips += 1

    def put_control(self, message: tuple) -> None:
        with self._cond:
            self._items.append(message)

    def peek(self) -> ClipItem | tuple | None:
        with self._cond:
            return self._items[0] if self._items else None

    def get(self) -> ClipItem | tuple | None:
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, ClipItem):
                self._clips -= 1
                self._cond.notify_all()
            return item

    def __len__(self) -> int:
        return len(self._items)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@dataclass
class ReaderStats:
    """Counters the live panel shows (written by the reader thread, read by others)."""

    frames: int = 0
    clips: int = 0
    segments: int = 0
    fps_in: float = 0.0
    state: str = "connecting"
    last_error: str | None = None
    _recent: deque = field(default_factory=lambda: deque(maxlen=50))

    def frame_arrived(self, now: float) -> None:
        self.frames += 1
        self._recent.append(now)
        if len(self._recent) > 1 and self._recent[-1] > self._recent[0]:
            self.fps_in = (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])


class StreamReader(threading.Thread):
    """Reads one source on its own thread into ``queue``; see the module docstring.

    Control messages put on the queue: ``("segment", index, FrameTimes, info)`` when a
    connection starts delivering frames, ``("segment_end", index, reason)`` when it stops,
    ``("gap", from_wall, to_wall, missing_s)`` after a reconnection, ``("failed", message)`` and
    ``("finished",)`` (nothing more will come).
    """

    def __init__(
        self,
        spec: SourceSpec,
        settings: ExtractionSettings,
        queue: ClipQueue,
        stop: threading.Event,
        *,
        reconnect: bool = True,
        reconnect_for_s: float = 0.0,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        ring_s: float = 0.0,
        max_frames: int = 1_000_000,
    ) -> None:
        super().__init__(name=f"watch-{spec.name}", daemon=True)
        self.spec = spec
        self.settings = settings
        self.queue = queue
        self.stop_event = stop
        self.reconnect = reconnect and spec.kind != "file"
        self.reconnect_for_s = reconnect_for_s
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_frames = max_frames
        self.stats = ReaderStats()
        self.recorder = Recorder(ring_s, self._recording_failed)
        self._segment = -1

    # --- recording (called from the compute thread) ------------------------------------------
    def record(self, key: str, path: Path, *, segment: int, from_s: float) -> bool:
        """Start writing segment ``segment``'s footage from ``from_s`` (pre-roll from the ring, or
        from the ring's oldest keyframe if ``from_s`` has left it). False when that segment is
        over: its packets are gone."""
        return self.recorder.record(
            key, path, from_s=from_s, allowed=lambda: segment == self._segment and self.stats.state == "live"
        )

    def stop_recording(self, key: str, *, until_s: float) -> None:
        self.recorder.stop(key, until_s=until_s)

    def _recording_failed(self, name: str, exc: Exception) -> None:
        self.stats.last_error = f"clip {name}: {_reason(exc)}"

    # --- reading -------------------------------------------------------------------------------
    def _open(self):
        import av

        fmt, options = input_options(self.spec)
        try:
            container = av.open(
                self.spec.location, format=fmt, options=options, timeout=(self.open_timeout_s, self.read_timeout_s)
            )
        except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"{self.spec.name}: cannot open {self.spec.location}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise DecodeError(f"{self.spec.name}: {self.spec.location} has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            container.close()
            raise DecodeError(f"{self.spec.name}: {self.spec.location}: the video codec is not supported")
        stream.thread_type = "AUTO"
        return container, stream

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug on one camera must not kill the others
            self.queue.put_control(("failed", f"{self.spec.name}: unexpected {type(exc).__name__}: {_reason(exc)}"))
        finally:
            self.recorder.close()
            self.stats.state = "stopped" if self.stats.state not in ("failed", "ended") else self.stats.state
            self.queue.put_control(("finished",))

    def _run(self) -> None:
        try:
            container, stream = self._open()
        except DecodeError as exc:
            self.stats.state = "failed"
            self.stats.last_error = str(exc)
            self.queue.put_control(("failed", str(exc)))
            return
        while not self.stop_event.is_set():
            reason = self._play(container, stream)
            if self.stop_event.is_set() or not self.reconnect:
                self.stats.state = "ended"
                return
            lost = time.time()
            self.stats.state = "reconnecting"
            delay = 0.5
            container = None
            while not self.stop_event.is_set():
                if self.reconnect_for_s and time.time() - lost > self.reconnect_for_s:
                    self.stats.state = "ended"
                    self.stats.last_error = f"gave up reconnecting after {self.reconnect_for_s:g} s ({reason})"
                    return
                try:
                    container, stream = self._open()
                    break
                except DecodeError as exc:
                    self.stats.last_error = str(exc)
                    self.stop_event.wait(delay)
                    delay = min(delay * 2, 10.0)
            if container is None:
                return
            self.queue.put_control(("gap", lost, time.time(), reason))

    def _decoded(self, container, stream, start, tb: float, state: dict):
        """Frames of one connection in presentation order; packets go to the recorder.
        A read error ends the connection (its reason in ``state``) after flushing the decoder,
        so the frames it still holds are not lost (an HTTP stream ends with an I/O error)."""
        import av

        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as exc:
                state["reason"] = _reason(exc)
                try:
                    yield from stream.codec_context.decode(None)
                except av.error.FFmpegError:
                    pass
                return
            if packet.size and packet.pts is not None and tb:
                p_start = start if start is not None else packet.pts
                start = p_start
                entry = (
                    (packet.pts - p_start) * tb,
                    bool(packet.is_keyframe),
                    bytes(packet),
                    packet.pts,
                    packet.dts,
                    packet.duration,
                )
                self.recorder.packet(entry)
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged packet: skip it, as the file decoder does

    def _play(self, container, stream) -> str:
        """Deliver one connection's frames as a segment; returns why it stopped."""
        self._segment += 1
        self.stats.segments += 1
        self.stats.state = "live"
        self.recorder.new_segment(stream)
        times = FrameTimes(max_frames=self.max_frames)
        s = self.settings
        info = {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0) or None,
            "codec": stream.codec_context.name,
        }
        self.queue.put_control(("segment", self._segment, times, info))
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = stream.start_time
        step = 1.0 / info["fps"] if info["fps"] else 0.04
        window: deque = deque(maxlen=s.clip_len)
        next_start = 0
        prev_t: float | None = None
        index = 0
        wall0: float | None = None
        reason = "end of stream"
        state = {"reason": reason}
        try:
            for frame in self._decoded(container, stream, start, tb, state):
                if self.stop_event.is_set():
                    state["reason"] = "stopped"
                    break
                if start is None:
                    start = frame.pts if frame.pts is not None else 0
                if frame.pts is not None and tb:
                    t = (frame.pts - start) * tb
                else:
                    t = prev_t + step if prev_t is not None else 0.0
                if prev_t is not None and t <= prev_t:
                    t = prev_t + step
                prev_t = t
                if self.spec.realtime:
                    if wall0 is None:
                        wall0 = time.monotonic() - t
                    delay = wall0 + t - time.monotonic()
                    if delay > 0 and self.stop_event.wait(delay):
                        state["reason"] = "stopped"
                        break
                now = time.monotonic()
                times.append(t)
                self.stats.frame_arrived(now)
                i = index
                index += 1
                if i < next_start:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                if min(rgb.shape[:2]) < MIN_SIDE:
                    raise DecodeError(f"{self.spec.name}: frame size {rgb.shape[1]}x{rgb.shape[0]} is too small")
                window.append(resize_frame(rgb, s.resize_short))
                if i == next_start + s.clip_len - 1:
                    crops = crop_clip(torch.stack(list(window)), s.crop_size, s.crops)
                    self.queue.put_clip(ClipItem(self._segment, next_start, crops, now), self.stop_event)
                    self.stats.clips += 1
                    next_start += s.stride
            reason = state["reason"]
        except DecodeError as exc:
            reason = str(exc)
            self.stats.last_error = reason
        finally:
            self.recorder.close()
            times.close()
            container.close()
            self.queue.put_control(("segment_end", self._segment, reason))
        return reason
