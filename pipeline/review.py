"""A review folder built and what it lost printed: shared by ``vadpipe report`` and ``detect --report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from vadpipe.postprocess.intervals import IntervalsDocument

__all__ = ["write_report"]


def write_report(
    doc: IntervalsDocument,
    out: Path,
    *,
    doc_path: Path | None,
    annotations: Path | None,
    proxy: str,
    copy_sources: bool,
    quiet: bool,
    sources_root: Path | None = None,
) -> None:
    """Build the folder and print where it is and what it lost."""
    from vadpipe.postprocess.report import ReportOptions, build_report

    options = ReportOptions(proxy=proxy, copy_sources=copy_sources, annotations=annotations, sources_root=sources_root)
    result = build_report(doc, out, options=options, doc_path=doc_path, progress=not quiet)
    for line in result.problems:
        click.secho(f"warning: {line}", fg="yellow", err=True)
    click.echo(
        f"report: {result.index} ({result.n_videos} videos, {result.n_proxies} proxies, "
        f"{result.n_thumbnails} thumbnails)",
        err=True,
    )
