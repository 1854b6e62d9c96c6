"""Event clips of a live source: a ring of its recent packets, and the MP4 files written from it.

The reader thread hands every packet of the current segment to a `Recorder`; it keeps the last
``ring_s`` seconds (the pre-roll) and feeds each open recording. A recording is a fragmented MP4
(a fragment at least every 0.5 s, flushed at once: playable up to its last fragment even if the
process is killed while writing), started from the last keyframe at or before the time asked for.
Packets are copied, never decoded again, so a clip costs no compute.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Recorder"]


@dataclass
class _Recording:
    path: Path
    from_s: float = 0.0
    until_s: float | None = None  # stop after this segment time; None = open-ended for now
    container: Any = None
    stream: Any = None
    base: int | None = None
    packets: int = 0


class Recorder:
    """The packets of one source's current segment: the ring and the recordings fed from it.

    ``packet``, ``new_segment`` and ``close`` run on the reader thread; ``record`` and ``stop`` on
    the compute thread. ``on_error(file name, exception)`` hears of a clip file that broke (that
    recording ends; the others and the reader go on).
    """

    def __init__(self, ring_s: float, on_error: Callable[[str, Exception], None]) -> None:
        self.ring_s = ring_s
        self._on_error = on_error
        self._ring: deque = deque()  # (segment time, keyframe, bytes, pts, dts, duration)
        self._recordings: dict[str, _Recording] = {}
        self._lock = threading.Lock()
        self._in_stream: Any = None

    def record(self, key: str, path: Path, *, from_s: float, allowed: Callable[[], bool]) -> bool:
        """Start recording ``key`` into ``path`` from segment time ``from_s``, unless ``allowed()``
        (asked under the lock the reader feeds recordings under) says the segment is over."""
        with self._lock:
            if not allowed():
                return False
            self._recordings[key] = _Recording(path=path, from_s=from_s)
            return True

    def stop(self, key: str, *, until_s: float) -> None:
        with self._lock:
            if key in self._recordings:
                self._recordings[key].until_s = until_s

    def new_segment(self, stream: Any) -> None:
        """A new connection's video stream: the packets of the one before are gone."""
        self._in_stream = stream
        self._ring.clear()

    def packet(self, entry: tuple) -> None:
        """One packet of the segment ``(segment time, keyframe, bytes, pts, dts, duration)``."""
        if self.ring_s > 0:
            self._ring.append(entry)
            while self._ring and self._ring[0][0] < entry[0] - self.ring_s:
                self._ring.popleft()
        if self._recordings:
            self._feed(entry)

    def close(self) -> None:
        """The segment ended (or the reader stops): close every recording."""
        self._feed(None, closing=True)

    def _start(self, rec: _Recording) -> None:
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

    def _feed(self, entry: tuple | None, *, closing: bool = False) -> None:
        with self._lock:
            for key, rec in list(self._recordings.items()):
                try:
                    if rec.container is None and not closing:
                        self._start(rec)
                    elif entry is not None and rec.container is not None:
                        self._write(rec, entry)
                    done = closing or (rec.until_s is not None and entry is not None and entry[0] > rec.until_s)
                except Exception as exc:  # one broken clip file never stops the watch
                    self._on_error(rec.path.name, exc)
                    done = True
                if done:
                    if rec.container is not None:
                        try:
                            rec.container.close()
                        except Exception as exc:
                            self._on_error(rec.path.name, exc)
                    del self._recordings[key]
