"""The ``vadpipe`` command line: a click group whose commands parse options and call library code."""

from __future__ import annotations

import sys

import click

from vadpipe._version import __version__
from vadpipe.errors import VadpipeError

__all__ = ["main"]


EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT


class _Group(click.Group):
    """One red line and a documented exit code instead of a traceback, unless ``--debug`` is given.

    ``VadpipeError``: its own code (2). ``OSError`` that escaped a command (an output file that
    cannot be written, a folder that vanished): 2, naming the file. Ctrl-C: 130.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VadpipeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.secho(f"error: {where}{exc.strerror or exc}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vadpipe")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Weakly supervised video anomaly detection: extract I3D features, train, detect intervals.

    Default workspace: ./vadpipe-work (or $VADPIPE_HOME), holding features/ and runs/.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


from vadpipe.cmd_extract import extract  # noqa: E402

main.add_command(extract)

from vadpipe.cmd_evaluate import evaluate  # noqa: E402

main.add_command(evaluate)

from vadpipe.cmd_detect import detect  # noqa: E402

main.add_command(detect)

from vadpipe.cmd_train import train  # noqa: E402

main.add_command(train)

from vadpipe.cmd_demo import demo  # noqa: E402

main.add_command(demo)

from vadpipe.cmd_report import report  # noqa: E402

main.add_command(report)

from vadpipe.cmd_watch import watch  # noqa: E402

main.add_command(watch)
