"""The live terminal panel of ``vadpipe watch`` (rich): one row per camera."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["render", "live_panel"]

_COLOURS = {"live": "green", "reconnecting": "yellow", "connecting": "cyan", "failed": "red", "ended": "dim"}


def render(watch) -> Table:
    table = Table(title="vadpipe watch", expand=False)
    for column in ("camera", "state", "score", "fps in", "clips/s", "clips", "dropped", "last event"):
        table.add_column(column, justify="right" if column not in ("camera", "state", "last event") else "left")
    for st in watch.statuses():
        colour = _COLOURS.get(st.state, "white")
        table.add_row(
            st.name,
            f"[{colour}]{st.state}[/]",
            "-" if st.score is None else f"{st.score:.3f}",
            f"{st.fps_in:.1f}",
            f"{st.clips_per_s:.2f}",
            str(st.clips),
            f"[red]{st.dropped}[/]" if st.dropped else "0",
            st.last_event or "-",
        )
    if watch.capacity_clips_s is not None:
        table.caption = f"I3D: {watch.capacity_clips_s:.2f} clips/s on {watch.encoder.device}"
    return table


@contextmanager
def live_panel(watch) -> Iterator[Callable[[], None]]:
    """A rich Live on stderr; yields the function the watch loop calls to refresh it."""
    with Live(render(watch), console=Console(stderr=True), auto_refresh=False, transient=False) as live:
        yield lambda: live.update(render(watch), refresh=True)
