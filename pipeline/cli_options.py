"""What every ``vadpipe`` command's options share: a help screen grouped under headings, and old
spellings kept as hidden aliases that still work and print one deprecation line.

One place so that the naming table (README, Command reference) is applied the same way in every
command: `Command` prints the options by `Option.group` and resolves the aliases; `Option` takes
a ``group``; `Alias` is an old spelling of an option; `AliasedChoice` a choice with old values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

__all__ = ["GROUPS", "Alias", "AliasedChoice", "Command", "Option", "deprecated", "option", "trained_run_option"]

# The headings of every command's --help, in this order (a command shows those it has).
GROUPS = ("Input", "Output", "Clips", "Model", "Recipe", "Operating point", "Evaluation", "Validation", "Where it runs")
_ALIASES = "vadpipe.aliases"  # ctx.meta key: target option name -> (alias, value) given on the command line


def _short_metavar(kind: click.ParamType) -> str | None:
    """DIR, FILE, N, X for the common types (click's DIRECTORY, INTEGER RANGE... crowd the help)."""
    if isinstance(kind, click.Path):
        return "DIR" if not kind.file_okay else "FILE" if not kind.dir_okay else "PATH"
    if isinstance(kind, click.types.IntParamType):
        return "N"
    if isinstance(kind, click.types.FloatParamType):
        return "X"
    return None


def deprecated(old: str, new: str) -> None:
    """The one line an old spelling prints."""
    click.secho(f"warning: {old} is deprecated, use {new}", fg="yellow", err=True)


class Option(click.Option):
    """A click option shown under the heading ``group`` in ``--help``."""

    def __init__(self, *args: Any, group: str = "Options", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group
        if self.metavar is None and not self.is_flag:
            self.metavar = _short_metavar(self.type)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """click's record; an option without a default and no word on it says ``[default: none]``."""
        record = super().get_help_record(ctx)
        if record is None or self.is_flag or self.multiple or self.required or self.default is not None:
            return record
        if "[default" in record[1]:  # the help says it in words
            return record
        return record[0], f"{record[1]}  [default: none]"


class Alias(Option):
    """A hidden old spelling of another option: the value goes to the option named ``target``
    (when given), or to its own name (``target`` None, e.g. a flag that maps to ``--set``);
    given on the command line it prints one line naming ``use``, the new spelling."""

    def __init__(self, *args: Any, use: str, target: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, hidden=True, expose_value=target is None, **kwargs)
        self.use = use
        self.target = target
        if target is not None:  # its own slot, so that the target's source tells whether it was given too
            self.name = f"deprecated_{self.name}"

    def handle_parse_result(self, ctx: click.Context, opts: Mapping[str, Any], args: list[str]) -> tuple[Any, list]:
        value, args = super().handle_parse_result(ctx, opts, args)
        if ctx.get_parameter_source(self.name) == ParameterSource.COMMANDLINE:
            deprecated(
                self.opts[0] if value is not False or not self.secondary_opts else self.secondary_opts[0], self.use
            )
            if self.target is not None:
                ctx.meta.setdefault(_ALIASES, {})[self.target] = (self, value)
        return value, args


class AliasedChoice(click.Choice):
    """A choice that also takes old values (``{"code": "authors"}``), hidden from ``--help``:
    each one given prints one deprecation line and becomes its new value."""

    def __init__(self, choices: Sequence[str], aliases: Mapping[str, str]) -> None:
        super().__init__(list(choices) + list(aliases))
        self.shown = tuple(choices)
        self.aliases = dict(aliases)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"[{'|'.join(self.shown)}]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = super().convert(value, param, ctx)
        if value in self.aliases:
            if not isinstance(param, Alias):  # an old flag has said its line already
                name = param.opts[0] if param is not None else "the value"
                deprecated(f"{name} {value}", f"{name} {self.aliases[value]}")
            value = self.aliases[value]
        return value


def option(*decls: str, group: str, **kwargs: Any) -> Callable:
    """``click.option`` with a help-screen heading (``cls`` may be a subclass of `Option`)."""
    kwargs.setdefault("cls", Option)
    return click.option(*decls, group=group, **kwargs)


def trained_run_option(func: Callable) -> Callable:
    """``--run DIR`` of the commands that read a trained run (detect, evaluate, watch), with its old
    spelling ``--model``: one definition, so the three say the same."""
    kind = click.Path(file_okay=False, path_type=Path)
    func = click.option("--model", cls=Alias, target="model_dir", use="--run", type=kind)(func)
    return option(
        "--run",
        "model_dir",
        group="Input",
        type=kind,
        default=None,
        help="Run folder from vadpipe train [default: the latest run in the workspace].",
    )(func)


class Command(click.Command):
    """A command whose ``--help`` groups the options under the `GROUPS` headings (``--help`` last,
    under "Other") and shows every default, and whose aliases fill their targets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {}).setdefault("show_default", True)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for target, (alias, value) in ctx.meta.get(_ALIASES, {}).items():
            if ctx.get_parameter_source(target) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"{alias.opts[0]} is the old spelling of {alias.use}: give one of them", ctx)
            ctx.params[target] = value
            ctx.set_parameter_source(target, ParameterSource.COMMANDLINE)
        return rest

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {heading: [] for heading in GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                groups.setdefault(getattr(param, "group", "Other"), []).append(record)
        for heading, rows in groups.items():
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(rows)
