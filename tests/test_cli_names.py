"""The command line's naming table (README, Command reference): one name per concept in every
command, every visible option documented, and every old spelling still working with one
deprecation line naming the new one."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from vadpipe.cli import main
from vadpipe.cli_options import Alias, Command
from vadpipe.errors import ConfigError
from vadpipe.train_options import KEYS, parse_set

COMMANDS = dict(main.commands)


def _visible(command: click.Command) -> dict[str, click.Option]:
    """Every option --help shows, by each of its spellings."""
    return {
        opt: p
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden
        for opt in p.opts + p.secondary_opts
    }


# concept -> (its one name, the commands that have it)
TABLE = {
    "feature cache": ("--features", ["extract", "train", "detect", "evaluate"]),
    "run folder": ("--run", ["train", "detect", "evaluate", "watch"]),
    "machine-readable output": ("--json", ["extract", "train", "detect", "evaluate"]),
    "folder the command creates": ("--out", ["report", "demo"]),
    "I3D network": ("--backbone", ["extract", "train", "detect", "watch"]),
    "crops to extract": ("--crops", ["extract", "detect"]),
    "crop files to train on": ("--crop-indices", ["train"]),
    "crops per I3D forward pass": ("--i3d-batch", ["extract", "detect", "watch"]),
    "samples per training step": ("--batch-size", ["train"]),
    "annotations of the validation features": ("--val-annotations", ["train"]),
    "reconnecting a live source": ("--reconnect-for", ["watch"]),
}


@pytest.mark.parametrize("concept", TABLE)
def test_one_name_per_concept(concept: str) -> None:
    name, commands = TABLE[concept]
    for command in COMMANDS:
        assert (name in _visible(COMMANDS[command])) == (command in commands), (concept, command)


def test_every_command_uses_the_grouped_help_and_every_visible_option_is_documented() -> None:
    for name, command in COMMANDS.items():
        assert isinstance(command, Command), name
        ctx = click.Context(command, info_name=name, **command.context_settings)
        for opt, param in _visible(command).items():
            assert param.help and param.help.strip(), f"vadpipe {name} {opt} has no help text"
            if not (param.is_flag or param.multiple or param.required):
                assert "[default: " in param.get_help_record(ctx)[1], f"vadpipe {name} {opt} shows no default"
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, click.Choice) and not param.hidden:
                assert "code" not in param.type.get_metavar(param, None), (name, param.name)  # 'authors' now
        text = CliRunner().invoke(main, [name, "--help"], terminal_width=80).output
        assert "\nOptions:\n" not in text and "Other:" in text, name


def test_train_help_fits_on_one_screen() -> None:
    result = CliRunner().invoke(main, ["train", "--help"], terminal_width=80)
    assert result.exit_code == 0 and len(result.output.splitlines()) <= 60, result.output
    keys = CliRunner().invoke(main, ["train", "--help-keys"]).output
    assert all(key in keys for key in KEYS) and "[default: " in keys


def test_watch_help_says_quiet_means_no_panel() -> None:
    text = " ".join(CliRunner().invoke(main, ["watch", "--help"], terminal_width=200).output.split())
    assert "never with --quiet" in text and "no panel" in text


def _parse(command: str, args: list[str], capsys) -> tuple[dict, list[str]]:
    """The parameters ``args`` give (parsing only) and the deprecation lines printed."""
    ctx = COMMANDS[command].make_context(command, list(args))  # click consumes the list
    lines = [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]
    return ctx.params, lines


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "d"
    folder.mkdir()
    file = tmp_path / "f.txt"
    file.write_text("x 0 1\n")
    return {"dir": str(folder), "file": str(file)}


# (command, old args, new spelling, parameter, expected value; "{dir}"/"{file}" are filled in)
ALIASES = [
    ("extract", ["--out", "{dir}"], "--features", "out_dir", "{dir}"),
    ("extract", ["--batch-size", "3"], "--i3d-batch", "i3d_batch", 3),
    ("detect", ["--cache", "{dir}"], "--features", "cache_dir", "{dir}"),
    ("detect", ["--model", "{dir}"], "--run", "model_dir", "{dir}"),
    ("detect", ["--out", "{file}"], "--json", "out", "{file}"),
    ("detect", ["--batch-size", "3"], "--i3d-batch", "i3d_batch", 3),
    ("evaluate", ["--model", "{dir}"], "--run", "model_dir", "{dir}"),
    ("watch", ["--model", "{dir}"], "--run", "model_dir", "{dir}"),
    ("watch", ["--batch-size", "3"], "--i3d-batch", "i3d_batch", 3),
    ("watch", ["--no-reconnect"], "--reconnect-for SECONDS (0: never)", "reconnect", False),
    ("watch", ["--reconnect"], "--reconnect-for SECONDS (0: never)", "reconnect", True),
    ("train", ["--out", "{dir}"], "--run", "run_dir", "{dir}"),
    ("train", ["--crops", "0,1"], "--crop-indices", "crop_indices", "0,1"),
    ("train", ["--annotations", "{file}"], "--val-annotations", "val_annotations", "{file}"),
    ("train", ["--features-backbone", "kinetics400-imagenet"], "--backbone", "backbone", "kinetics400-imagenet"),
    ("train", ["--loss-weights", "code"], "--loss-weights authors", "loss_weights", "authors"),
]
_BASE = {"extract": ["v.mp4"], "detect": ["v.mp4"], "evaluate": ["--features", "{dir}", "--annotations", "{file}"]}


def _fill(items: list, paths: dict[str, str]) -> list:
    return [item.format(**paths) if isinstance(item, str) else item for item in items]


@pytest.mark.parametrize("command, old, new, param, expected", ALIASES, ids=[f"{a[0]} {a[1][0]}" for a in ALIASES])
def test_old_spelling_works_and_warns_once(command, old, new, param, expected, paths, capsys) -> None:
    params, lines = _parse(command, _fill(_BASE.get(command, []) + old, paths), capsys)
    value = params[param]
    assert (str(value) if isinstance(value, Path) else value) == _fill([expected], paths)[0]
    assert (
        len(lines) == 1 and lines[0] == f"warning: {old[0]} {'code ' if 'code' in old else ''}is deprecated, use {new}"
    )


def test_every_hidden_alias_has_a_test() -> None:
    tested = {(command, old[0]) for command, old, *_ in ALIASES}
    tested |= {("train", opt) for key in KEYS.values() for opt in key.old.split("/")}
    for name, command in COMMANDS.items():
        for param in command.params:
            if isinstance(param, Alias):
                assert {(name, opt) for opt in param.opts + param.secondary_opts} <= tested, (name, param.opts)


def _key_sample(name: str) -> tuple[list[str], object]:
    """Old flag arguments for the --set key ``name`` and the value they give."""
    key = KEYS[name]
    if key.type is click.BOOL:
        return [key.old.split("/")[1]], False
    if isinstance(key.type, click.Choice):
        return [key.old, key.type.choices[0]], key.type.choices[0]
    if isinstance(key.type, click.types.IntParamType):
        return [key.old, "3"], 3
    return [key.old, "0.5"], 0.5


@pytest.mark.parametrize("name", KEYS)
def test_old_training_flag_maps_to_set_and_warns_once(name: str, capsys) -> None:
    args, value = _key_sample(name)
    params, lines = _parse("train", args, capsys)
    assert params[name] == value
    assert lines == [f"warning: {args[0]} is deprecated, use --set {name}=VALUE"]
    assert parse_set((f"{name}={args[1] if len(args) > 1 else 'false'}",)) == {name: value}


def test_set_parses_by_the_fields_type_and_names_the_keys_on_a_mistake(capsys) -> None:
    assert parse_set(("w_mil=0.25", "align=true", "block_len=4", "schedule=cosine")) == {
        "w_mil": 0.25,
        "align": True,
        "block_len": 4,
        "schedule": "cosine",
    }
    assert parse_set(("view_scaling=code",)) == {"view_scaling": "authors"}
    assert capsys.readouterr().err.count("deprecated") == 1
    with pytest.raises(ConfigError, match="KEY one of min_steps, balanced, .*holdout_fraction"):
        parse_set(("w_typo=1",))
    with pytest.raises(ConfigError, match="--set block_len"):
        parse_set(("block_len=zero",))


def test_an_old_and_a_new_spelling_together_are_refused(paths) -> None:
    result = CliRunner().invoke(main, ["detect", "v.mp4", "--cache", paths["dir"], "--features", paths["dir"]])
    assert result.exit_code == 2 and "--cache is the old spelling of --features" in result.output


def test_shell_completion_script() -> None:
    result = CliRunner().invoke(main, [], prog_name="vadpipe", env={"_VADPIPE_COMPLETE": "bash_source"})
    assert result.exit_code == 0 and "_VADPIPE_COMPLETE" in result.output and "complete " in result.output


def test_the_old_value_code_through_the_old_flag_warns_once_and_means_authors(capsys) -> None:
    params, lines = _parse("train", ["--view-scaling", "code"], capsys)
    assert params["view_scaling"] == "authors" and lines == [
        "warning: --view-scaling is deprecated, use --set view_scaling=VALUE"
    ]
