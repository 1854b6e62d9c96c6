"""The report of a run: its start (missing inputs logged), then one collector for every executor.

Each video's result goes into the report (in input order at the end), its line into
failures.jsonl, the ``on_result`` callback and the progress bar, here once for all executors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import cache
from .events import Duplicate, Failed, Skipped
from .fileio import remove_stale_temps
from .results import ExtractReport, VideoResult
from .settings import ExtractionSettings

__all__ = ["open_report", "Collector"]


def open_report(
    out_dir: Path,
    settings: ExtractionSettings,
    missing: list[VideoResult],
    *,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """A run's second step, once the weights are known: clean up after killed runs and start the
    report with the missing inputs (also logged to failures.jsonl)."""
    remove_stale_temps(out_dir)
    report = ExtractReport(out_dir=str(out_dir), settings_key=settings.key(), results=list(missing))
    for r in missing:
        cache.append_failure(out_dir, Path(r.source), r.error or "failed")
        if on_result:
            on_result(r)
    return report


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


class Collector:
    """The one report collector of a run: each video's result (put in input order at the end),
    its line in failures.jsonl, the ``on_result`` callback and the progress bar.

    Executors pass it results (``add``) and the events they do not handle themselves (``take``);
    a sequence number per video orders the report as the videos were claimed.
    """

    def __init__(
        self,
        report: ExtractReport,
        *,
        out_dir: Path,
        total: int,
        progress: bool,
        on_result: Callable[[VideoResult], None] | None,
    ) -> None:
        self.report = report
        self.out_dir = Path(out_dir)
        self.on_result = on_result
        self._done: dict[int, VideoResult] = {}
        self._bar = _progress(progress)
        self._videos = self._bar.add_task("videos", total=total, rate="")
        self._clips: Any = None
        self._clip_count = 0
        self._clock = time.perf_counter()

    def __enter__(self) -> Collector:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)
        results = [self._done[s] for s in sorted(self._done)]
        # a duplicate shares the entry of the video it duplicates, known once that one is written
        entries = {r.stem: r.entry for r in results if r.entry is not None}
        self.report.results.extend(
            replace(r, entry=entries[r.stem]) if r.status == "skipped" and r.entry is None and r.stem in entries else r
            for r in results
        )

    def add(self, seq: int, result: VideoResult, *, logged: bool = False) -> None:
        """A video's result; a failure goes to failures.jsonl unless its process ``logged`` it."""
        self._done[seq] = result
        if result.status == "failed" and not logged:
            cache.append_failure(self.out_dir, Path(result.source), result.error or "failed")
        if self.on_result:
            self.on_result(result)
        self._bar.advance(self._videos)

    def has(self, seq: int) -> bool:
        return seq in self._done

    def take(self, seq: int, event: Skipped | Duplicate | Failed) -> None:
        """The result a claim-loop or decoder event stands for."""
        if isinstance(event, Skipped):
            self.add(seq, VideoResult.skipped(event.source, event.entry))
        elif isinstance(event, Duplicate):
            self.add(seq, VideoResult(str(event.source), "skipped", event.stem, note=f"same content as {event.first}"))
        else:
            self.add(seq, VideoResult(str(event.source), "failed", error=event.error))

    def began(self, source: Path) -> None:
        self._bar.update(self._videos, description=f"videos [dim]{Path(source).name[:40]}[/]")

    def clip(self) -> None:
        """One more clip decoded (the clips/s figure of the bar)."""
        if self._clips is None:
            self._clips = self._bar.add_task("clips", total=None, rate="")
            self._clock = time.perf_counter()
        self._clip_count += 1
        rate = self._clip_count / max(time.perf_counter() - self._clock, 1e-9)
        self._bar.update(self._clips, advance=1, rate=f"{rate:.2f} clips/s")
