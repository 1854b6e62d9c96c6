"""Extraction in the process that collects the results: the collector around a run, and the
in-process executors.

Two callers: ``engines.extract_videos`` (every executor, once it has found the inputs, checked
the cache folder and opened the report) and each process of ``devices`` (its shard, on the
thread or decode-process executor). A device process so runs its shard directly: it never
re-enters ``extract_videos``, whose first steps its parent has already taken.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vadpipe.errors import ConfigError

from .collector import Collector
from .encoder import ClipEncoder
from .options import DecodeProcessOptions, ExtractRun, InProcessOptions, ThreadOptions
from .results import ExtractReport, VideoResult
from .runner import run_in_thread
from .settings import ExtractionSettings
from .workers import run_with_decode_processes

__all__ = ["run_collected", "run_in_process"]


def run_collected(
    execute: Callable[[ExtractRun], None],
    report: ExtractReport,
    *,
    sources: list[Path],
    out_dir: Path,
    settings: ExtractionSettings,
    batch_size: int,
    weights: Path | None,
    weights_file: Path | None,
    progress: bool,
    on_result: Callable[[VideoResult], None] | None,
) -> None:
    """``execute`` the run of ``sources`` with one collector filling ``report``.

    Ctrl-C ends it with ``report.interrupted`` set; the videos finished by then stay cached.
    """
    with Collector(report, out_dir=out_dir, total=len(sources), progress=progress, on_result=on_result) as collect:
        # other processes and Ray nodes work in other folders: they get absolute paths
        run = ExtractRun(
            sources=sources,
            out_dir=out_dir.resolve(),
            settings=settings,
            batch_size=batch_size,
            weights=weights,
            weights_file=weights_file,
            collect=collect,
        )
        try:
            execute(run)
        except KeyboardInterrupt:
            report.interrupted = True


def run_in_process(run: ExtractRun, executor: InProcessOptions, encoder: ClipEncoder) -> None:
    """Run ``run`` on the executor whose network is ``encoder``, in this process."""
    if isinstance(executor, ThreadOptions):
        run_in_thread(run, encoder)
    elif isinstance(executor, DecodeProcessOptions):
        run_with_decode_processes(run, executor, encoder)
    else:
        raise ConfigError(f"not an in-process executor: {executor!r}")
