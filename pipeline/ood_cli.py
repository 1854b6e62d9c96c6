"""The ``--ood warn|error|ignore`` option and its terminal lines, shared by detect, evaluate and watch.

Per video outside the training footage one line (`vadpipe.postprocess.ood.outside_line`):
``warn`` prints it as a warning, ``error`` as an error and then fails with exit code 2 (after
the results are written: they carry the mark too), ``ignore`` prints nothing. A model that
cannot judge (trained before vadpipe recorded its training footage) says so once, unless
``ignore``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from vadpipe.cli_options import option

__all__ = ["OOD_MODES", "ood_option", "report_outside"]

OOD_MODES = ("warn", "error", "ignore")  # vadpipe.postprocess.ood.OOD_MODES, spelled out to keep --help light

ood_option = option(
    "--ood",
    "ood",
    group="Operating point",
    type=click.Choice(OOD_MODES),
    default="warn",
    show_default=True,
    help="Videos outside the training footage (most clips far from the training features): warn (one line "
    "each; marked in the JSON), error (the same lines, then exit code 2) or ignore (marked in the JSON only).",
)


def report_outside(judged: Iterable[tuple[str, object]], *, can_judge: bool, mode: str, run_dir: Path) -> int:
    """Print the lines for ``judged`` ((shown name, `VideoOOD` or None)) and apply ``mode``.

    Returns the number of videos outside the training footage.

    Raises:
        OutsideFootageError: ``mode == "error"`` and at least one video is outside.
    """
    from vadpipe.postprocess.ood import OutsideFootageError, cannot_judge_line, outside_line

    judged = list(judged)
    if not can_judge:
        if mode != "ignore":
            click.secho(f"note: {cannot_judge_line(run_dir)}", fg="yellow", err=True)
        return 0
    outside = [(name, j) for name, j in judged if j is not None and j.outside]
    if mode != "ignore":
        for name, j in outside:
            click.secho(
                f"{'error' if mode == 'error' else 'warning'}: {outside_line(name, j)}",
                fg="red" if mode == "error" else "yellow",
                err=True,
            )
    if mode == "error" and outside:
        raise OutsideFootageError(
            f"{len(outside)} of {len(judged)} video(s) are outside the training footage of "
            f"{run_dir} (--ood error; --ood warn accepts their results)"
        )
    return len(outside)
