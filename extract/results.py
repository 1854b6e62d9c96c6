"""What a run hands back: one ``VideoResult`` per input, gathered in an ``ExtractReport``.

A result of a video that has a complete entry (computed now, or found complete and current)
carries that entry (record and frame times), so the stages after extraction use what the job
wrote or verified instead of reading and hashing the cache again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import CacheEntry

__all__ = ["VideoResult", "ExtractReport"]


@dataclass
class VideoResult:
    """Outcome for one input: ok, partial (damaged but decoded), zero_clips, skipped or failed."""

    source: str
    status: str
    stem: str | None = None
    clips: int = 0
    error: str | None = None
    note: str | None = None
    entry: CacheEntry | None = field(default=None, repr=False)  # the entry written or verified; None: failed

    @classmethod
    def skipped(cls, source: Path | str, entry: CacheEntry) -> VideoResult:
        """The result of a video whose entry was complete and current: nothing was computed."""
        return cls(str(source), "skipped", entry.record.stem, entry.record.clips.count, entry=entry)

    @property
    def damage(self) -> str | None:
        """The damage of a partial entry, whether decoded now or found so in the cache; None when clean."""
        record = self.entry.record if self.entry is not None else None
        return record.error if record is not None and record.status == "partial" else None

    def to_dict(self) -> dict[str, Any]:
        """The report's fields (the entry itself is in the cache, not in the report)."""
        return {
            "source": self.source,
            "status": self.status,
            "stem": self.stem,
            "clips": self.clips,
            "error": self.error,
            "note": self.note,
        }


@dataclass
class ExtractReport:
    """One run's results; the timings tell how well the network was fed (bench/extract.py).

    ``loop_s``: wall time of the compute loop; ``network_s``: time in the network (averaged over
    the network actors on Ray); ``input_wait_s``: time the network waited for clips (on Ray:
    its idle time). Summed over devices with one process per device.
    """

    out_dir: str
    settings_key: str
    results: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    network_s: float = 0.0
    input_wait_s: float = 0.0
    loop_s: float = 0.0

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def clips_computed(self) -> int:
        return sum(r.clips for r in self.results if r.status in ("ok", "partial"))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def input_wait_share(self) -> float:
        """Share of the compute loop the network spent waiting for input (0 when nothing ran)."""
        return self.input_wait_s / self.loop_s if self.loop_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "settings_key": self.settings_key,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "clips_computed": self.clips_computed,
            "timing": {
                "loop_s": round(self.loop_s, 3),
                "network_s": round(self.network_s, 3),
                "input_wait_s": round(self.input_wait_s, 3),
            },
            "results": [r.to_dict() for r in self.results],
        }
