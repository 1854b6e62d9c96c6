"""Live sources: open a camera URL, a V4L2 device or a paced file, and cut it into clips as it plays.

One `StreamReader` thread per camera demuxes and decodes with PyAV/FFmpeg, turns frames into
the extractor's clips (`resize_frame` + `crop_clip`, the same geometry as ``vadpipe extract``)
and hands them to a bounded `ClipQueue`. Frame times are the presentation times relative to the
stream's start (as `vadpipe.extract.decode` computes them for files), so a stream and the same
file give the same clips at the same times.

* URLs (rtsp, rtmp, http(s), udp, srt, tcp) are opened with low-latency input options
  (``flags=low_delay``, a small probe), RTSP over TCP unless the URL asks
  otherwise (``?rtsp_transport=udp`` is FFmpeg's own option), and an open/read timeout.
* ``/dev/videoN`` is opened with FFmpeg's ``v4l2`` input.
* Files are read as fast as the consumer takes clips, or at their own frame rate with
  ``realtime`` (to try vadpipe watch without a camera).

A stream that drops or stalls after it played is reconnected with exponential backoff (0.5 s,
doubling, at most 10 s) until ``reconnect_for_s`` seconds of outage have passed; each
reconnection starts a new *segment* (frame indices and times restart, as for a new video) and is
reported as a ``gap``. A source that cannot be opened at all fails with one line. A ring buffer
of recent packets lets `StreamReader.record` write an event's footage, pre-roll included, as a
fragmented MP4 (a fragment at least every 0.5 s, flushed at once: playable up to its last
fragment even if the process is killed while writing).
"""

from __future__ import annotations

import re
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadpipe.errors import ConfigError, DecodeError

from .decode import MIN_SIDE
from .settings import ExtractionSettings
from .transforms import crop_clip, resize_frame

__all__ = [
    "URL_SCHEMES",
    "SourceSpec",
    "parse_source",
    "FrameTimes",
    "ClipItem",
    "ClipQueue",
    "StreamReader",
    "input_options",
]

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class SourceSpec:
    """One camera: its name (used in events and file names), where it comes from and how to read it.

    ``kind``: ``"url"``, ``"device"`` or ``"file"``; ``realtime``: pace a file at its frame rate.
    """

    name: str
    location: str
    kind: str
    realtime: bool = False

    @property
    def live(self) -> bool:
        """Frames arrive at the camera's pace (clips are dropped when compute falls behind)."""
        return self.kind != "file" or self.realtime


def parse_source(text: str, *, name: str | None = None, realtime: bool = False) -> SourceSpec:
    """A command-line source: a URL with a known scheme, a ``/dev/video*`` device, or a file."""
    m = _SCHEME.match(text)
    if m:
        scheme = m.group(1).lower()
        if scheme not in URL_SCHEMES:
            raise ConfigError(
                f"unsupported source {text!r}: scheme {scheme}:// is not one of "
                f"{', '.join(s + '://' for s in URL_SCHEMES)}"
            )
        kind = "url"
    elif text.startswith("/dev/"):
        kind = "device"
    else:
        if not Path(text).is_file():
            raise ConfigError(
                f"source {text!r} is neither a URL ({'/'.join(URL_SCHEMES[:5])}/...), "
                "a /dev/video* device, nor an existing file"
            )
        kind = "file"
    if name is None:
        base = Path(text.split("?")[0].rstrip("/")).name if kind != "url" else text.split("://", 1)[1]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_.") or "camera"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"camera name {name!r} may only hold letters, digits, '_', '.' and '-'")
    return SourceSpec(name=name, location=text, kind=kind, realtime=realtime and kind == "file")


def input_options(spec: SourceSpec) -> tuple[str | None, dict[str, str]]:
    """(FFmpeg input format, options) for opening ``spec`` with low latency."""
    if spec.kind == "device":
        return "v4l2", {}
    if spec.kind == "file":
        return None, {}
    scheme = spec.location.split("://", 1)[0].lower()
    # no fflags=nobuffer: it throws away the packets read while probing, i.e. the first keyframe
    opts = {"flags": "low_delay", "probesize": "500000", "analyzeduration": "1000000"}
    if scheme in ("rtsp", "rtsps") and "rtsp_transport" not in spec.location:
        opts["rtsp_transport"] = "tcp"
    if scheme == "udp":
        opts["fifo_size"] = "1000000"  # 188-byte packets: ~190 MB/s for a second of burst
        opts["overrun_nonfatal"] = "1"
    return None, opts


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
class _Recording:
    path: Path
    from_s: float = 0.0
    until_s: float | None = None  # stop after this segment time; None = open-ended for now
    container: Any = None
    stream: Any = None
    base: int | None = None
    packets: int = 0


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
        self.ring_s = ring_s
        self.max_frames = max_frames
        self.stats = ReaderStats()
        self._ring: deque = deque()  # (segment time, keyframe, bytes, pts, dts, duration)
        self._recordings: dict[str, _Recording] = {}
        self._rec_lock = threading.Lock()
        self._in_stream = None
        self._segment = -1

    # --- recording (called from the compute thread) ------------------------------------------
    def record(self, key: str, path: Path, *, segment: int, from_s: float) -> bool:
        """Start writing segment ``segment``'s footage from ``from_s`` (pre-roll from the ring, or
        from the ring's oldest keyframe if ``from_s`` has left it). False when that segment is
        over: its packets are gone."""
        with self._rec_lock:
            if segment != self._segment or self.stats.state != "live":
                return False
            self._recordings[key] = _Recording(path=path, from_s=from_s)
            return True

    def stop_recording(self, key: str, *, until_s: float) -> None:
        with self._rec_lock:
            if key in self._recordings:
                self._recordings[key].until_s = until_s

    def _start_recording(self, rec: _Recording) -> None:
        import av

        rec.path.parent.mkdir(parents=True, exist_ok=True)
        rec.container = av.open(
            str(rec.path),
            "w",
            format="mp4",
            options={
                "movflags": "empty_moov+default_base_moof+frag_keyframe",
                "frag_duration": "500000",
                "flush_packets": "1",
            },
        )
        rec.stream = rec.container.add_stream_from_template(self._in_stream)
        # pre-roll: from the last keyframe at or before from_s
        entries = list(self._ring)
        first = 0
        for i, e in enumerate(entries):
            if e[1] and e[0] <= rec.from_s:
                first = i
        for e in entries[first:]:
            self._write(rec, e)

    def _write(self, rec: _Recording, entry: tuple) -> None:
        import av

        _, key, data, pts, dts, duration = entry
        if rec.base is None:
            if not key:
                return  # a file must start on a keyframe
            rec.base = dts if dts is not None else (pts or 0)
        packet = av.Packet(data)
        packet.pts = None if pts is None else pts - rec.base
        packet.dts = None if dts is None else dts - rec.base
        packet.duration = duration
        packet.is_keyframe = key
        packet.time_base = self._in_stream.time_base
        packet.stream = rec.stream
        rec.container.mux(packet)
        rec.packets += 1

    def _feed_recordings(self, entry: tuple | None, *, closing: bool = False) -> None:
        with self._rec_lock:
            for key, rec in list(self._recordings.items()):
                try:
                    if rec.container is None and not closing:
                        self._start_recording(rec)
                    elif entry is not None and rec.container is not None:
                        self._write(rec, entry)
                    done = closing or (rec.until_s is not None and entry is not None and entry[0] > rec.until_s)
                except Exception as exc:  # one broken clip file never stops the watch
                    self.stats.last_error = f"clip {rec.path.name}: {_reason(exc)}"
                    done = True
                if done:
                    if rec.container is not None:
                        try:
                            rec.container.close()
                        except Exception as exc:
                            self.stats.last_error = f"clip {rec.path.name}: {_reason(exc)}"
                    del self._recordings[key]

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
            self._feed_recordings(None, closing=True)
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
        """Frames of one connection in presentation order; packets go to the ring and recordings.
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
                if self.ring_s > 0:
                    self._ring.append(entry)
                    while self._ring and self._ring[0][0] < entry[0] - self.ring_s:
                        self._ring.popleft()
                if self._recordings:
                    self._feed_recordings(entry)
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged packet: skip it, as the file decoder does

    def _play(self, container, stream) -> str:
        """Deliver one connection's frames as a segment; returns why it stopped."""
        self._segment += 1
        self.stats.segments += 1
        self.stats.state = "live"
        self._in_stream = stream
        self._ring.clear()
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
            self._feed_recordings(None, closing=True)
            times.close()
            container.close()
            self.queue.put_control(("segment_end", self._segment, reason))
        return reason
