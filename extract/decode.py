"""Video decoding to RGB frames with their real presentation times.

PyAV is the default backend (threaded decoding); decord is an optional alternative
(``pip install vadpipe[decord]``). Frames come out in presentation order, rotated upright
according to the display-matrix metadata, each with its time in seconds from the stream start,
so variable-frame-rate files get correct times. Damaged packets are skipped and reported
instead of aborting the whole video.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vadpipe.errors import ConfigError, DecodeError

__all__ = ["Frame", "VideoInfo", "DecodeLog", "VIDEO_EXTENSIONS", "MIN_SIDE", "open_frames", "resample_fps", "upright"]

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
        ".mts",
        ".m2ts",
        ".3gp",
        ".ogv",
        ".vob",
        ".asf",
        ".dav",
        ".h264",
        ".264",
        ".hevc",
        ".h265",
    }
)
MIN_SIDE = 16  # smaller frames cannot carry a meaningful 224x224 crop, even upscaled


@dataclass(frozen=True)
class VideoInfo:
    """Stream properties known before decoding; ``width``/``height`` are after rotation.

    ``decode_threads``: the threads the decoder runs with (0: not known, decord).
    """

    width: int
    height: int
    fps: float
    rotation: int
    codec: str
    declared_frames: int
    declared_duration_s: float | None
    decode_threads: int = 0


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    rgb: np.ndarray  # (H, W, 3) uint8, upright


@dataclass
class DecodeLog:
    """What went wrong while decoding a video that still produced frames."""

    damaged_packets: int = 0
    messages: list[str] = field(default_factory=list)
    truncated: bool = False
    truncated_detail: str | None = None

    def note(self, message: str) -> None:
        self.damaged_packets += 1
        if len(self.messages) < 5:
            self.messages.append(message)

    @property
    def summary(self) -> str | None:
        if not self.damaged_packets and not self.truncated:
            return None
        parts = []
        if self.damaged_packets:
            parts.append(f"{self.damaged_packets} damaged packet(s) skipped ({self.messages[0]})")
        if self.truncated:
            parts.append(f"stream ends early ({self.truncated_detail or 'truncated file'})")
        return "; ".join(parts)


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    # rotation = counter-clockwise angle of the display matrix: rotate the picture by it to show it upright
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _check_size(width: int, height: int, path: Path) -> None:
    if min(width, height) < MIN_SIDE:
        raise DecodeError(f"{path}: frame size {width}x{height} is too small (both sides must be >= {MIN_SIDE} px)")


# FFmpeg's single-image demuxers (the *_pipe ones are matched by suffix): one picture is not a video
_IMAGE_FORMATS = frozenset({"image2", "image2pipe"})


class _PyAVFrames:
    def __init__(self, path: Path, log: DecodeLog, threads: int | None = None) -> None:
        import av

        self._av = av
        self.path = path
        self.log = log
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"{path}: not a readable video ({_reason(exc)})") from exc
        if not self.container.streams.video:
            audio = bool(self.container.streams.audio)
            self.container.close()
            raise DecodeError(
                f"{path}: no video stream (audio only)"
                if audio
                else f"{path}: no video stream found (a truncated file, or not a video)"
            )
        fmt = self.container.format.name
        if fmt.endswith("_pipe") or fmt in _IMAGE_FORMATS:
            self.container.close()
            raise DecodeError(f"{path}: a still image ({fmt.removesuffix('_pipe')}), not a video")
        self.stream = self.container.streams.video[0]
        cc = self.stream.codec_context
        if cc is None:  # e.g. an MP4 cut before its index: the data is there, what it holds is not
            self.container.close()
            raise DecodeError(f"{path}: the video stream cannot be decoded (unknown codec: a truncated file?)")
        self.stream.thread_type = "AUTO"
        if threads is not None:  # else FFmpeg's own count: every core
            cc.thread_count = threads
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            duration = float(self.stream.duration * self.stream.time_base)
        self._first = self._first_frame()
        rotation = int(round(self._first.rotation or 0)) if self._first is not None else 0
        width, height = (cc.width, cc.height) if rotation % 180 == 0 else (cc.height, cc.width)
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=fps,
            rotation=rotation,
            codec=cc.name,
            declared_frames=int(self.stream.frames or 0),
            declared_duration_s=duration,
            decode_threads=cc.thread_count,  # FFmpeg's count once the decoder is open
        )
        if self._first is not None:
            _check_size(width, height, path)

    def _packets(self) -> Iterator:
        av = self._av
        demux = self.container.demux(self.stream)
        self.n_packets = 0
        self.last_packet_end_s: float | None = None
        self._data_end = self._max_packet = 0
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                self._check_complete()
                return
            except av.error.FFmpegError as exc:
                self.log.truncated = True
                self.log.truncated_detail = _reason(exc)
                return
            if packet.size:
                self.n_packets += 1
                self._max_packet = max(self._max_packet, packet.size)
                if packet.pos is not None and packet.pos >= 0:
                    self._data_end = max(self._data_end, packet.pos + packet.size)
                if packet.pts is not None and packet.time_base is not None:
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    self.last_packet_end_s = max(end, self.last_packet_end_s or end)
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                self.log.note(_reason(exc))
                continue
            yield from decoded

    def _check_complete(self) -> None:
        """Flag a file that ends before its own index says it should (cut off mid-stream).

        Such a demuxer just stops at the end of the data, without an error. MP4/MOV declare their
        packet count, which is compared exactly; other containers declare at most a duration,
        compared with a tolerance (10%, at least 0.5 s) for streams that end a little early. Either
        only counts when the packets stop near the end of the file: packets an edit list leaves
        out of an intact file stop far from it. MPEG-TS declares nothing: a cut TS file is not
        detected (its frames are all valid anyway).
        """
        if self._data_end and self.path.stat().st_size - self._data_end > (1 << 16) + 4 * self._max_packet:
            return
        declared = int(self.stream.frames or 0)
        if declared:
            if self.n_packets < declared:
                self.log.truncated = True
                self.log.truncated_detail = f"{self.n_packets} of the {declared} frames its index lists are in the file"
            return
        tb = self.stream.time_base
        duration = (
            float(self.stream.duration * tb)
            if self.stream.duration is not None and tb is not None
            else self.container.duration / 1e6
            if self.container.duration
            else None
        )
        if duration is None or self.last_packet_end_s is None:
            return
        start = float(self.stream.start_time * tb) if self.stream.start_time is not None and tb is not None else 0.0
        got = self.last_packet_end_s - start
        if duration - got > max(0.5, 0.1 * duration):
            self.log.truncated = True
            self.log.truncated_detail = f"data for {got:.2f} s of the {duration:.2f} s it declares"

    def _first_frame(self):
        self._iter = self._packets()
        return next(self._iter, None)

    def __iter__(self) -> Iterator[Frame]:
        start = self.stream.start_time
        tb = float(self.stream.time_base) if self.stream.time_base else 0.0
        step = 1.0 / self.info.fps if self.info.fps > 0 else 0.04
        prev = None
        index = 0
        frames = self._iter
        first = self._first
        if first is None:
            return
        if start is None:
            start = first.pts if first.pts is not None else 0
        for f in _chain(first, frames):
            if f.pts is not None and tb:
                t = (f.pts - start) * tb
            else:
                t = (prev + step) if prev is not None else 0.0
            if prev is not None and t <= prev:  # broken or missing timestamps: keep time increasing
                t = prev + step
            rgb = upright(f.to_ndarray(format="rgb24"), self.info.rotation)
            yield Frame(index=index, time_s=t, rgb=rgb)
            prev = t
            index += 1

    def close(self) -> None:
        self.container.close()


def _chain(first, rest):
    yield first
    yield from rest


class _DecordFrames:
    def __init__(self, path: Path, log: DecodeLog, chunk: int = 32) -> None:
        try:
            import decord
        except ImportError as exc:
            raise ConfigError("the decord backend needs the decord package: pip install 'vadpipe[decord]'") from exc
        self.path = path
        self.log = log
        self.chunk = chunk
        try:
            self.reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        except Exception as exc:  # decord raises DECORDError (a RuntimeError) for anything unreadable
            raise DecodeError(f"{path}: not a readable video ({_reason(exc)})") from exc
        first = self.reader[0].asnumpy() if len(self.reader) else None
        rotation = _probe_rotation(path)
        h, w = (first.shape[0], first.shape[1]) if first is not None else (0, 0)
        width, height = (w, h) if rotation % 180 == 0 else (h, w)
        n = len(self.reader)
        fps = float(self.reader.get_avg_fps() or 0.0)
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=fps,
            rotation=rotation,
            codec="decord",
            declared_frames=n,
            declared_duration_s=n / fps if fps else None,
        )
        if n:
            _check_size(width, height, path)

    def __iter__(self) -> Iterator[Frame]:
        n = len(self.reader)
        if n == 0:
            return
        times = self.reader.get_frame_timestamp(range(n))[:, 0].astype(np.float64)
        times -= times[0]
        for start in range(0, n, self.chunk):
            idx = list(range(start, min(n, start + self.chunk)))
            batch = self.reader.get_batch(idx).asnumpy()
            for i, rgb in zip(idx, batch):
                yield Frame(index=i, time_s=float(times[i]), rgb=upright(rgb, self.info.rotation))

    def close(self) -> None:
        del self.reader


def _probe_rotation(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                return int(round(f.rotation or 0))
    except av.error.FFmpegError:
        pass
    return 0


def _reason(exc: BaseException) -> str:
    """A short cause without the file name (callers prefix it): FFmpeg's strerror when there is one."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


class open_frames:
    """Context manager yielding ``(info, frames)`` for a video; ``log`` collects damage.

    ``threads``: PyAV's decoder threads (None: FFmpeg's automatic count, every core). Processes
    that decode side by side each take a share of the cores instead (``procs.decode_threads``):
    automatic threading in each would run processes x cores threads. The frames are the same.

    Example:
        >>> with open_frames(Path("clip.mp4")) as (info, frames):  # doctest: +SKIP
        ...     for frame in frames: ...
    """

    def __init__(
        self, path: Path, *, backend: str = "pyav", fps: float | None = None, threads: int | None = None
    ) -> None:
        self.path = Path(path)
        self.backend = backend
        self.fps = fps
        self.threads = threads
        self.log = DecodeLog()
        self._src = None

    def __enter__(self) -> tuple[VideoInfo, Iterator[Frame]]:
        if not self.path.is_file():
            raise DecodeError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise DecodeError(f"{self.path}: empty file (0 bytes)")
        if self.backend == "pyav":
            self._src = _PyAVFrames(self.path, self.log, self.threads)
        elif self.backend == "decord":
            self._src = _DecordFrames(self.path, self.log)
        else:
            raise ConfigError(f"unknown decoder {self.backend!r} (use pyav or decord)")
        frames: Iterator[Frame] = iter(self._src)
        if self.fps is not None:
            frames = resample_fps(frames, self.fps, native_fps=self._src.info.fps)
        return self._src.info, frames

    def __exit__(self, *exc) -> None:
        if self._src is not None:
            self._src.close()


def resample_fps(frames: Iterator[Frame], fps: float, *, native_fps: float = 0.0) -> Iterator[Frame]:
    """Frames at a constant ``fps`` chosen by timestamp: output k shows the frame on screen at k/fps.

    Frames are repeated or dropped as needed; the last source frame is held for its own duration.
    """
    if not 0 < fps < float("inf"):
        raise ConfigError(f"fps must be a finite number > 0, got {fps}")
    k = 0
    prev: Frame | None = None
    last_step = 1.0 / native_fps if native_fps > 0 else 1.0 / fps
    for frame in frames:
        if prev is not None:
            last_step = frame.time_s - prev.time_s if frame.time_s > prev.time_s else last_step
            while k / fps < frame.time_s - 1e-9:
                yield Frame(index=k, time_s=k / fps, rgb=prev.rgb)
                k += 1
        prev = frame
    if prev is not None:
        end = prev.time_s + last_step
        while k / fps < end - 1e-9:
            yield Frame(index=k, time_s=k / fps, rgb=prev.rgb)
            k += 1
