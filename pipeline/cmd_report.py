"""``vadpipe report``: a static HTML folder to review the detections of an intervals JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vadpipe.cli_options import Command, option
from vadpipe.postprocess.report.media import PROXY_MODES

if TYPE_CHECKING:
    pass

__all__ = ["report"]

_PROXY_HELP = (
    "auto: an H.264 MP4 proxy (<= 480 lines) for videos browsers do not play (decided from container "
    "and codec); always: a proxy for every video; never: link the sources as they are."
)


@click.command("report", cls=Command)
@click.argument("intervals", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@option(
    "--out",
    "out",
    group="Output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write (index.html inside); rebuilding it keeps the verdicts and reuses media.",
)
@option(
    "--annotations",
    group="Input",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Ground truth to draw under the curves (XD-Violence annotations.txt format, frame intervals).",
)
@option(
    "--sources",
    "sources_root",
    group="Input",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder to find relative source paths in when they are not found from the working directory "
    "[default: then the intervals file's folder].",
)
@option("--proxy", group="Output", type=click.Choice(PROXY_MODES), default="auto", show_default=True, help=_PROXY_HELP)
@option(
    "--copy-sources",
    group="Output",
    is_flag=True,
    help="Copy the source videos into the folder instead of linking them (a folder to move or send).",
)
@option("-q", "--quiet", group="Output", is_flag=True, help="No progress bar.")
def report(
    intervals: Path,
    out: Path,
    annotations: Path | None,
    sources_root: Path | None,
    proxy: str,
    copy_sources: bool,
    quiet: bool,
) -> None:
    """Write a static review folder for an intervals JSON from vadpipe detect: open OUT/index.html.

    No server and no network: every page, script, thumbnail and proxy is in the folder; sources
    are linked by relative path. Verdicts given in the pages are exported as a labels CSV
    (vadpipe train --labels) and an annotations file (--annotations).
    """
    from vadpipe.postprocess.intervals import read_intervals
    from vadpipe.review import write_report

    doc = read_intervals(intervals)
    write_report(
        doc,
        out,
        doc_path=intervals,
        annotations=annotations,
        proxy=proxy,
        copy_sources=copy_sources,
        quiet=quiet,
        sources_root=sources_root,
    )
