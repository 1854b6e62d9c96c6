"""What a browser can play, H.264 proxies of what it cannot, and thumbnails at given times.

Why: a review page must play every video it lists, and surveillance footage often comes as
MS-MPEG4 AVI, Cinepak, HEVC or 4:4:4 H.264 that no browser decodes. Deciding from the container
and the codec (rather than trying in a browser) keeps the report buildable without one. Proxies
are H.264 (High profile, yuv420p) MP4 with the index up front, which every current browser
plays, Debian's Chromium included (checked by tests/test_report.py); their frames keep the
source's presentation times, counted from the first frame as `vadpipe detect` counts them, so
the intervals' seconds point at the same pictures in the proxy.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vadpipe.errors import DecodeError
from vadpipe.extract.decode import open_frames, upright

__all__ = ["PROXY_MODES", "Playability", "probe_playability", "make_proxy", "make_thumbnails"]

PROXY_MODES = ("auto", "always", "never")
PROXY_MAX_HEIGHT = 480

# file suffix -> video codecs (FFmpeg names) browsers decode in it; audio likewise (or no audio)
_NATIVE_VIDEO = {
    ".mp4": {"h264", "vp9", "av1"},
    ".m4v": {"h264", "vp9", "av1"},
    ".mov": {"h264"},
    ".webm": {"vp8", "vp9", "av1"},
}
_NATIVE_AUDIO = {"aac", "mp3", "opus", "vorbis", "flac"}
_NATIVE_PIX = {"yuv420p", "yuvj420p"}  # 8-bit 4:2:0: 4:2:2/4:4:4 and 10-bit H.264 do not play everywhere


@dataclass(frozen=True)
class Playability:
    """Whether browsers play a file as it is, and why (shown on its page)."""

    native: bool
    reason: str


def probe_playability(path: Path) -> Playability:
    """Decide from the file suffix, the container's streams and the video codec/pixel format.

    Raises:
        DecodeError: the file cannot be opened as a video.
    """
    import av

    suffix = path.suffix.lower()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            video = container.streams.video[0].codec_context
            codec, pix = video.name, video.format.name if video.format else "unknown"
            audio = [s.codec_context.name for s in container.streams.audio if s.codec_context is not None]
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{path}: not a readable video ({exc})") from exc
    if suffix not in _NATIVE_VIDEO:
        return Playability(False, f"{codec} in a {suffix or 'suffix-less'} file: browsers do not play the container")
    if codec not in _NATIVE_VIDEO[suffix]:
        return Playability(False, f"{codec} video in {suffix}: browsers do not decode it")
    if pix not in _NATIVE_PIX:
        return Playability(False, f"{codec} {pix}: browsers decode only 8-bit 4:2:0")
    bad_audio = [a for a in audio if a not in _NATIVE_AUDIO]
    if bad_audio:
        return Playability(False, f"{bad_audio[0]} audio: browsers do not decode it")
    return Playability(True, f"{codec} {pix} in {suffix}: browsers play it")


def _proxy_size(width: int, height: int) -> tuple[int, int]:
    """At most PROXY_MAX_HEIGHT lines, aspect kept, both sides even (4:2:0 needs them)."""
    scale = min(1.0, PROXY_MAX_HEIGHT / height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _temp_beside(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def make_proxy(source: Path, target: Path) -> None:
    """Transcode ``source`` to an H.264 MP4 at ``target`` (written atomically; video only).

    Frames are decoded upright by `open_frames` (the decoder extraction uses) and keep their
    times, so a variable-frame-rate source stays in step with its intervals.
    """
    import av

    tmp = _temp_beside(target, ".mp4")
    try:
        with (
            open_frames(source) as (info, frames),
            av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            width, height = _proxy_size(info.width, info.height)
            rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "26", "profile": "high"}
            time_base = Fraction(1, 90000)
            stream.codec_context.time_base = time_base
            last_pts = -1
            for frame in frames:
                picture = av.VideoFrame.from_ndarray(frame.rgb, format="rgb24").reformat(
                    width=width, height=height, format="yuv420p"
                )
                pts = max(int(round(frame.time_s / time_base)), last_pts + 1)
                picture.pts, picture.time_base, last_pts = pts, time_base, pts
                for packet in stream.encode(picture):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        if last_pts < 0:
            raise DecodeError(f"{source}: no frame could be decoded for the proxy")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def make_thumbnails(source: Path, times_s: list[float], targets: list[Path], *, width: int = 240) -> None:
    """A JPEG of the frame shown at each time (seconds from the first frame), ``width`` px wide.

    Seeks to the key frame before each time and decodes forward, so a long video is not decoded
    whole; each file is written atomically.

    Raises:
        DecodeError: the file cannot be opened or holds no frame at some time.
    """
    import av

    try:
        container = av.open(str(source))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{source}: not a readable video ({exc})") from exc
    with container:
        stream = container.streams.video[0]
        tb = stream.time_base or Fraction(1, 1000)
        start = stream.start_time
        for t, target in sorted(zip(times_s, targets)):
            picture = None
            if start is None:  # no declared start: count from the first frame, as the decoder does
                container.seek(0)
                first = next(container.decode(stream), None)
                start = first.pts if first is not None and first.pts is not None else 0
            try:
                container.seek(start + int(t / tb), stream=stream, backward=True)
                for frame in container.decode(stream):
                    if picture is not None and frame.pts is not None and (frame.pts - start) * tb > t:
                        break
                    picture = frame
            except av.error.FFmpegError as exc:
                if picture is None:
                    raise DecodeError(f"{source}: cannot decode a frame at {t:.2f} s ({exc})") from exc
            if picture is None:
                raise DecodeError(f"{source}: no frame at {t:.2f} s")
            rotation = int(round(picture.rotation or 0))
            raw_w, raw_h = picture.width, picture.height
            if rotation % 180:  # shown sideways: the raw height becomes the shown width
                size = (max(2, int(round(width * raw_w / raw_h))), width)
            else:
                size = (width, max(2, int(round(width * raw_h / raw_w))))
            small = picture.reformat(width=size[0], height=size[1], format="rgb24")
            rgb = upright(small.to_ndarray(), rotation)
            tmp = _temp_beside(target, ".jpg")
            try:
                from PIL import Image

                Image.fromarray(rgb).save(tmp, format="JPEG", quality=80)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
