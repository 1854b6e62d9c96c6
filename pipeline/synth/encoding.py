"""Encoding: frames streamed into an H.264 (else MPEG-4 part 2) file, written atomically."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.format import ContainerFormat

from vadpipe.errors import ConfigError
from vadpipe.extract.fileio import atomic_writer
from vadpipe.synth.config import CODECS, SynthConfig

__all__ = ["available_codec", "container_format", "encode_video"]


def available_codec(requested: str = "auto") -> str:
    """The encoder to use: ``libx264`` if this PyAV build can encode H.264, else ``mpeg4``.

    Raises:
        ConfigError: a specific codec was requested and the installed PyAV cannot encode it.
    """
    candidates = CODECS if requested == "auto" else (requested,)
    for name in candidates:
        try:
            av.Codec(name, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError: not built into this FFmpeg
            continue
        return name
    raise ConfigError(f"the installed PyAV ({av.__version__}) cannot encode {requested!r}; use codec='auto'")


def container_format(path: Path) -> str:
    """The muxer for ``path``'s suffix (``mp4`` when it has none), named up front because the
    temp file the video is written to first does not carry the suffix."""
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        return "mp4"
    for name in (suffix, *sorted(av.formats_available)):  # the muxer named like the suffix first
        try:
            if suffix in ContainerFormat(name, "w").extensions:
                return name
        except ValueError:  # no muxer of that name (a demuxer only)
            continue
    raise ConfigError(f"no container format writes {path.suffix!r} files ({path}); use .mp4")


def encode_video(path: Path, frames: Iterator[np.ndarray], *, codec: str, config: SynthConfig) -> None:
    """Encode ``frames`` into ``path`` (atomically: a reader never sees a half-written video)."""
    muxer = container_format(path)
    with atomic_writer(path) as file, av.open(file, mode="w", format=muxer) as container:
        # One encoder thread: x264's output depends on the thread count, and the same seed must
        # give the same bytes on any machine (with the same PyAV build).
        if codec == "libx264":
            # ultrafast: 2-3x cheaper than veryfast; at crf 18 the files are still near-lossless.
            options = {"crf": "18", "preset": "ultrafast", "threads": "1"}
            stream = container.add_stream(codec, rate=config.fps, options=options)
        else:
            stream = container.add_stream(codec, rate=config.fps)
            stream.bit_rate = int(0.25 * config.width * config.height * config.fps)  # ~0.25 bit per pixel
        stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
        stream.thread_count = 1
        stream.codec_context.time_base = Fraction(1, config.fps)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, config.fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
