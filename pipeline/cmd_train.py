"""``vadpipe train``: train CSL-TAL on a feature cache or on XD-Violence features."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from click.core import ParameterSource

from vadpipe.errors import ConfigError, DataError
from vadpipe.extract.backbones import BACKBONES
from vadpipe.train_options import RUN_OPTIONS, RecipeOption, chosen_recipe, flags
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
        raise ConfigError(f"--crops must be comma-separated crop indices like 0,1,2, got {text!r}") from None
    if any(c < 0 for c in crops) or len(set(crops)) != len(crops):
        raise ConfigError(f"--crops must list distinct indices >= 0, got {text!r}")
    return crops


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


@click.command("train")
@click.option(
    "--features",
    type=_DIR,
    default=None,
    help="A vadpipe feature cache, or a folder of <video>__<crop>.npy files (XD-Violence layout, "
    "RGB/ is used when present).  [default: the workspace cache, features/]",
)
@click.option(
    "--labels",
    "labels_csv",
    type=_FILE,
    default=None,
    help="CSV 'video,label' (label 0/1 or normal/anomalous) covering every video; without it labels come "
    "from normal/ vs anomalous/ folders in the source paths, else from the _label_A (= normal) suffix.",
)
@click.option(
    "--out",
    "out_dir",
    type=_DIR,
    default=None,
    help="Run folder to create.  [default: a new timestamped folder in the workspace runs/]",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Continue this run from its last checkpoint, with its own settings (only --epochs may change).",
)
@click.option(
    "--recipe",
    type=click.Choice(["default", "paper"]),
    default="default",
    show_default=True,
    help="default: vadpipe's recipe for few, long videos (per-video loss, class-balanced batches, a top-k "
    "MIL term, one phase-shifted view and no alignment, at least 1,500 optimizer steps with warm-up "
    "and cosine decay, early stopping on the held-out videos). paper: the authors' exact recipe (50 epochs, lr 1e-4 then 1e-5 after epoch "
    "30, loss divided by the batch's steps), trained on every video with the fixed threshold 0.35. "
    "The options below override single settings of the recipe.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, cls=RecipeOption, help="Training epochs.")
@click.option(
    "--min-steps",
    type=click.IntRange(min=0),
    default=None,
    cls=RecipeOption,
    help="Train for at least this many optimizer steps (raises the epochs on small sets).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, cls=RecipeOption, help="Samples (crop files) per step."
)
@click.option(
    "--balanced/--no-balanced",
    default=None,
    cls=RecipeOption,
    help="Class-balanced batches (half normal, half anomalous).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    cls=RecipeOption,
    help="Adam learning rate (the peak, with --schedule cosine).",
)
@click.option(
    "--schedule",
    type=click.Choice(["multistep", "cosine"]),
    default=None,
    cls=RecipeOption,
    help="multistep: lr x --lr-decay after --lr-milestone epochs (the authors' code); cosine: linear warm-up "
    "over --warmup-steps optimizer steps, then a cosine decay to lr x --lr-decay.",
)
@click.option(
    "--lr-milestone",
    type=click.IntRange(min=0),
    default=None,
    cls=RecipeOption,
    help="--schedule multistep: epoch after which the lr is multiplied by --lr-decay "
    "(30: the authors' code; 10: the paper's text).",
)
@click.option(
    "--lr-decay",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    cls=RecipeOption,
    help="Factor applied to the lr after --lr-milestone, or the cosine schedule's final share of the lr.",
)
@click.option(
    "--warmup-steps",
    type=click.IntRange(min=0),
    default=None,
    cls=RecipeOption,
    help="--schedule cosine: optimizer steps of linear lr warm-up.",
)
@click.option(
    "--views",
    type=click.Choice(["random", "phase"]),
    default=None,
    cls=RecipeOption,
    help="The two augmented views: random (one random row per block of --block-len, the authors') or "
    "phase (two different phase-shifted sub-sequences, the ones full-rate scoring interleaves).",
)
@click.option(
    "--align/--no-align",
    default=None,
    cls=RecipeOption,
    help="Two views per sample and the alignment loss, or one view and none (Table 1's 'w/o align' row).",
)
@click.option(
    "--block-len",
    type=click.IntRange(min=1),
    default=None,
    cls=RecipeOption,
    help="Augmentation block length L: each view keeps one row per L rows (see --views).",
)
@click.option(
    "--attention",
    type=click.Choice(["mlp", "gated"]),
    default=None,
    cls=RecipeOption,
    help="Attention head: mlp (the paper's) or gated.",
)
@click.option(
    "--kernel-size",
    type=click.IntRange(min=1),
    default=None,
    cls=RecipeOption,
    help="Odd kernel size of the masked causal conv (active taps: the centre and before).",
)
@click.option(
    "--loss-weights",
    type=click.Choice(["code", "paper"]),
    default=None,
    help="Sparsity/smoothness weights: 'code' = 2e-3/2e-8 (the authors' code, both recipes), "
    "'paper' = 2e-8/2e-3 (the paper's eq. 6, read literally).  [default: code]",
)
@click.option(
    "--w-sparsity",
    type=click.FloatRange(min=0),
    default=None,
    cls=RecipeOption,
    help="Sparsity weight (overrides --loss-weights).",
)
@click.option(
    "--w-smooth",
    type=click.FloatRange(min=0),
    default=None,
    cls=RecipeOption,
    help="Smoothness weight (overrides --loss-weights).",
)
@click.option(
    "--w-align", type=click.FloatRange(min=0), default=None, cls=RecipeOption, help="Alignment weight (with --align)."
)
@click.option(
    "--w-mil",
    type=click.FloatRange(min=0),
    default=None,
    cls=RecipeOption,
    help="Weight of the top-k MIL term on the weighted T-CAM.",
)
@click.option(
    "--loss-norm",
    type=click.Choice(["steps", "video"]),
    default=None,
    cls=RecipeOption,
    help="Divide the batch loss by its total step count (the authors' code) or per video.",
)
@click.option(
    "--view-scaling",
    type=click.Choice(["code", "once"]),
    default=None,
    cls=RecipeOption,
    help="With two views (--align): code divides the BCE and MIL terms by the view count twice and "
    "sparsity/smoothness once (the authors' code); once divides every term by it once.",
)
@click.option(
    "--early-stopping/--no-early-stopping",
    default=None,
    cls=RecipeOption,
    help="Keep the weights with the lowest loss on the held-out training videos (video labels only) "
    "instead of the last ones; needs --holdout-fraction > 0.",
)
@click.option(
    "--ensemble",
    type=click.IntRange(min=1, max=99),
    default=None,
    cls=RecipeOption,
    help="Train this many members (seeds 100·--seed + k), side by side where cores allow, and save them "
    "as one run whose curve is the mean of theirs. With held-out videos they are cross-fitted: "
    "member k holds out fold k of as many folds, every video is trained on by the others and "
    "helps choose the operating point; a member no better than chance on its fold is left out. "
    "Costs N trainings; 1: one run on one held-out split.",
)
@click.option(
    "--crops", default=None, help="Comma-separated crop indices to use, e.g. 0.  [default: every crop present]"
)
@click.option("--seed", type=click.IntRange(min=0), default=None, cls=RecipeOption, help="Seeds init, order and views.")
@click.option(
    "--val-features",
    type=_DIR,
    default=None,
    help="Held-out features to score during training (an XD-Violence root uses RGBTest/).",
)
@click.option(
    "--annotations",
    type=_FILE,
    default=None,
    help="XD-Violence annotations.txt for --val-features (absent videos are normal).",
)
@click.option("--val-every", type=click.IntRange(min=1), default=1, show_default=True, help="Validate every N epochs.")
@click.option(
    "--holdout-fraction",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    cls=RecipeOption,
    help="Share of each class's training videos held out (seeded by --seed) for early stopping, to choose "
    "the detection thresholds and to calibrate scores; the saved model is the one trained without "
    "them. 0: train on every video and keep the paper's fixed threshold 0.35.",
)
@click.option(
    "--operating-point",
    type=click.Choice(["false-alarms", "f1"]),
    default=None,
    cls=RecipeOption,
    help="false-alarms: at most --target-false-alarm-rate of held-out normal videos get an interval, "
    "as many held-out anomalous videos as possible do; f1: best interval F1 at IoU 0.3 on the "
    "held-out videos (needs --train-annotations).",
)
@click.option(
    "--target-false-alarm-rate",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    cls=RecipeOption,
    help="Share of normal videos allowed to get an interval (--operating-point false-alarms).",
)
@click.option(
    "--train-annotations",
    type=_FILE,
    default=None,
    cls=RecipeOption,
    help="Frame annotations of the training videos (XD-Violence annotations.txt format): needed for "
    "--operating-point f1; with them interval scores are calibrated against real hits.",
)
@click.option(
    "--calibration",
    type=click.Choice(["platt", "isotonic"]),
    default=None,
    cls=RecipeOption,
    help="Score calibration on the held-out videos: platt (logistic on the score's logit; fine with few "
    "videos) or isotonic (needs hundreds).",
)
@click.option(
    "--features-backbone",
    type=click.Choice(list(BACKBONES)),
    default=None,
    help="The I3D network that made feature files without vadpipe records (the released XD-Violence and "
    "UCF-Crime I3D features: kinetics400-imagenet); recorded in the run so detect extracts with it. "
    "[default: the cache records' backbone; unknown for bare features]",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the run summary (last and best epoch) as JSON to this file.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(
    ctx: click.Context,
    *,
    features: Path | None,
    labels_csv: Path | None,
    out_dir: Path | None,
    resume_dir: Path | None,
    recipe: str,
    loss_weights: str | None,
    crops: str | None,
    val_features: Path | None,
    annotations: Path | None,
    val_every: int,
    features_backbone: str | None,
    json_out: Path | None,
    quiet: bool,
    **fields: object,
) -> None:
    """Train the CSL-TAL model and write a run folder (weights, config, metrics, curves).

    --recipe default (vadpipe's) holds out a quarter of the training videos for early stopping and
    to choose the operating point detect uses; --recipe paper reproduces the authors' training
    (model/README.md §6) on every video. The run becomes the workspace's latest run (used by detect)
    when it lies in the workspace runs/ folder. Prints the run folder.
    """
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
            if (val_features is None) != (annotations is None):
                raise ConfigError("validation needs both --val-features and --annotations")
            chosen = chosen_recipe(ctx, recipe)
            if features is None:
                features = features_dir()
                if not features.is_dir():
                    raise DataError(
                        f"no feature cache at {features}: run vadpipe extract first, or pass --features DIR"
                    )
            validation = None if val_features is None else ValidationSpec(val_features, annotations, val_every)
            run_dir = train_calibrated(
                features,
                out_dir=out_dir if out_dir is not None else new_run_dir(runs_dir()),
                config=chosen.training,
                calibration=chosen.calibration,
                labels_csv=labels_csv,
                crops=_parse_crops(crops),
                validation=validation,
                show_progress=not quiet,
                features_backbone=features_backbone,
                ensemble=chosen.ensemble,
            )
        if run_dir.resolve().parent == runs_dir().resolve():
            set_latest(runs_dir(), run_dir)
        summary = print_summary(run_dir)
    if json_out is not None:
        from vadpipe.model.run import write_json

        write_json(json_out, {"run": str(run_dir), **summary})
    click.echo(str(run_dir))
