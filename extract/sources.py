"""Live sources: what a command-line source names (a camera URL, a V4L2 device or a file) and how
FFmpeg opens it with low latency.

* URLs (rtsp, rtmp, http(s), udp, srt, tcp) are opened with low-latency input options
  (``flags=low_delay``, a small probe), RTSP over TCP unless the URL asks
  otherwise (``?rtsp_transport=udp`` is FFmpeg's own option).
* ``/dev/videoN`` is opened with FFmpeg's ``v4l2`` input.
* Files are read as fast as the consumer takes clips, or at their own frame rate with
  ``realtime`` (to try vadpipe watch without a camera).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vadpipe.errors import ConfigError

__all__ = ["URL_SCHEMES", "SourceSpec", "parse_source", "input_options"]

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
