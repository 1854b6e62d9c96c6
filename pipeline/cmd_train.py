"""``vadpipe train``: train CSL-TAL on a feature cache or on XD-Violence features."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from click.core import ParameterSource

from vadpipe.cli_options import Alias, AliasedChoice, Command, option
from vadpipe.errors import ConfigError, DataError
from vadpipe.extract.backbones import BACKBONES
from vadpipe.train_options import RUN_OPTIONS, RecipeOption, chosen_recipe, flags, key_aliases, keys_help, parse_set
from vadpipe.train_summary import print_summary
from vadpipe.workspace import features_dir, runs_dir

__all__ = ["train"]

_DIR = click.Path(path_type=Path, file_okay=False)
_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


def _parse_crops(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        crops = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--crop-indices must be comma-separated crop indices like 0,1,2, got {text!r}") from None
    if any(c < 0 for c in crops) or len(set(crops)) != len(crops):
        raise ConfigError(f"--crop-indices must list distinct indices >= 0, got {text!r}")
    return crops


def _print_keys(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(keys_help())
        ctx.exit()


def _each(decorators: list) -> Callable:
    """Apply ``decorators`` (the hidden old flags) in order."""

    def apply(f: Callable) -> Callable:
        for decorate in reversed(decorators):
            f = decorate(f)
        return f

    return apply


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show data and calibration warnings (skipped files, undefined AUCs, tiny held-out sets) as one yellow
    line each, every time."""
    from vadpipe.model.data import DataWarning
    from vadpipe.postprocess.calibration import CalibrationWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        click.secho(f"warning: {message}", fg="yellow", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.simplefilter("always", CalibrationWarning)
        warnings.showwarning = show
        yield


@click.command("train", cls=Command)
@option(
    "--features",
    group="Input",
    type=_DIR,
    default=None,
    metavar="DIR",
    help="Feature cache, or <video>__<crop>.npy files  [default: the workspace's features/].",
)
@option(
    "--labels",
    "labels_csv",
    group="Input",
    type=_FILE,
    default=None,
    help="CSV 'video,label'  [default: normal/ vs anomalous/ folders, else _label_A].",
)
@option(
    "--crop-indices",
    group="Input",
    default=None,
    metavar="0,1,...",
    help="Crop files to train on  [default: every crop].",
)
@option(
    "--backbone",
    group="Input",
    type=click.Choice(list(BACKBONES)),
    default=None,
    metavar="NAME",
    help=f"I3D network of bare feature files: {', '.join(BACKBONES)}  [default: the cache's].",
)
@option(
    "--run",
    "run_dir",
    group="Output",
    type=_DIR,
    default=None,
    help="Run folder to create  [default: new in the workspace's runs/].",
)
@option(
    "--json",
    "json_out",
    group="Output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the run summary as JSON here.",
)
@option(
    "--resume",
    "resume_dir",
    group="Output",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Continue this run (only --epochs may change).",
)
@option("-q", "--quiet", group="Output", is_flag=True, help="No progress bar.")
@option(
    "--recipe",
    group="Recipe",
    type=click.Choice(["default", "paper"]),
    default="default",
    help="default: vadpipe's, for few long videos; paper: the authors', threshold 0.35. The options below override it.",
)
@option("--epochs", group="Recipe", type=click.IntRange(min=1), default=None, cls=RecipeOption, help="Epochs.")
@option(
    "--batch-size",
    group="Recipe",
    type=click.IntRange(min=1),
    default=None,
    cls=RecipeOption,
    help="Samples (crop files) per training step.",
)
@option(
    "--lr", group="Recipe", type=click.FloatRange(min=0, min_open=True), default=None, cls=RecipeOption, help="Peak lr."
)
@option("--seed", group="Recipe", type=click.IntRange(min=0), default=None, cls=RecipeOption, help="Seeds everything.")
@option(
    "--ensemble",
    group="Recipe",
    type=click.IntRange(min=1, max=99),
    default=None,
    cls=RecipeOption,
    help="Members, cross-fitted on as many folds.",
)
@option(
    "--loss-weights",
    group="Recipe",
    type=AliasedChoice(["authors", "paper"], {"code": "authors"}),
    default=None,
    help="Sparsity/smoothness weights: 2e-3/2e-8 or eq. 6's 2e-8/2e-3  [default: authors].",
)
@option(
    "--set",
    "settings",
    group="Recipe",
    multiple=True,
    metavar="KEY=VALUE",
    help="An advanced setting (repeatable), e.g. w_mil=0.5; the keys: --help-keys.",
)
@option(
    "--help-keys",
    group="Recipe",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_keys,
    help="List the --set keys, values and defaults.",
)
@option(
    "--operating-point",
    group="Operating point",
    type=click.Choice(["false-alarms", "f1"]),
    default=None,
    cls=RecipeOption,
    help="Chosen on held-out videos: a false-alarm rate, or the best F1.",
)
@option(
    "--target-false-alarm-rate",
    group="Operating point",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    cls=RecipeOption,
    help="Share of normal videos allowed an interval.",
)
@option(
    "--train-annotations",
    group="Operating point",
    type=_FILE,
    default=None,
    cls=RecipeOption,
    help="Frame annotations of the training videos (f1 needs them).",
)
@option(
    "--calibration",
    group="Operating point",
    type=click.Choice(["platt", "isotonic"]),
    default=None,
    cls=RecipeOption,
    help="Score calibration on the held-out videos.",
)
@option(
    "--val-features",
    group="Validation",
    type=_DIR,
    default=None,
    help="Test features to score during training.",
)
@option(
    "--val-annotations",
    group="Validation",
    type=_FILE,
    default=None,
    help="annotations.txt of --val-features.",
)
@option("--val-every", group="Validation", type=click.IntRange(min=1), default=1, help="Validate every N epochs.")
@click.option("--out", cls=Alias, target="run_dir", use="--run", type=_DIR)
@click.option("--crops", cls=Alias, target="crop_indices", use="--crop-indices")
@click.option("--annotations", cls=Alias, target="val_annotations", use="--val-annotations", type=_FILE)
@click.option("--features-backbone", cls=Alias, target="backbone", use="--backbone", type=click.Choice(list(BACKBONES)))
@_each(key_aliases())
@click.pass_context
def train(
    ctx: click.Context,
    *,
    features: Path | None,
    labels_csv: Path | None,
    crop_indices: str | None,
    backbone: str | None,
    run_dir: Path | None,
    resume_dir: Path | None,
    recipe: str,
    loss_weights: str | None,
    settings: tuple[str, ...],
    val_features: Path | None,
    val_annotations: Path | None,
    val_every: int,
    json_out: Path | None,
    quiet: bool,
    **fields: object,
) -> None:
    """Train the CSL-TAL model into a run folder (model/README.md §6) and print the folder."""
    from vadpipe.calibrated_training import resume_calibrated, train_calibrated
    from vadpipe.model.run import new_run_dir, set_latest
    from vadpipe.model.validation import ValidationSpec

    with _warnings_to_stderr():
        if resume_dir is not None:
            given = [name for name in RUN_OPTIONS if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            if given:
                raise ConfigError(f"--resume continues a run with its own settings; drop {flags(ctx, given)}")
            run_dir = resume_calibrated(resume_dir, epochs=fields["epochs"], show_progress=not quiet)
        else:
            if (val_features is None) != (val_annotations is None):
                raise ConfigError("validation needs both --val-features and --val-annotations")
            chosen = chosen_recipe(ctx, recipe, parse_set(settings))
            if features is None:
                features = features_dir()
                if not features.is_dir():
                    raise DataError(
                        f"no feature cache at {features}: run vadpipe extract first, or pass --features DIR"
                    )
            validation = None if val_features is None else ValidationSpec(val_features, val_annotations, val_every)
            run_dir = train_calibrated(
                features,
                out_dir=run_dir if run_dir is not None else new_run_dir(runs_dir()),
                config=chosen.training,
                calibration=chosen.calibration,
                labels_csv=labels_csv,
                crops=_parse_crops(crop_indices),
                validation=validation,
                show_progress=not quiet,
                features_backbone=backbone,
                ensemble=chosen.ensemble,
            )
        if run_dir.resolve().parent == runs_dir().resolve():
            set_latest(runs_dir(), run_dir)
        summary = print_summary(run_dir)
    if json_out is not None:
        from vadpipe.model.run import write_json

        write_json(json_out, {"run": str(run_dir), **summary})
    click.echo(str(run_dir))
