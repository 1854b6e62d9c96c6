"""``vadpipe train``: train CSL-TAL on a feature cache or on XD-Violence features."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from click.core import ParameterSource

from vadpipe.errors import ConfigError, DataError
from vadpipe.extract.backbones import BACKBONES
from vadpipe.workspace import features_dir, runs_dir

__all__ = ["train"]

# Options that define a run; --resume takes them from the run's config.json instead.
_RUN_OPTIONS = ("features", "labels_csv", "out_dir", "recipe", "batch_size", "lr", "lr_milestone", "lr_decay",
                "schedule", "warmup_steps", "min_steps", "balanced", "w_mil", "early_stopping", "views", "align",
                "block_len", "attention", "kernel_size", "loss_weights", "w_sparsity", "w_smooth", "w_align",
                "loss_norm", "crops", "seed", "val_features", "annotations", "val_every", "holdout_fraction",
                "operating_point", "target_false_alarm_rate", "train_annotations", "calibration",
                "features_backbone")
# Options that only mean something when videos are held out for calibration.
_CALIBRATION_OPTIONS = ("operating_point", "target_false_alarm_rate", "train_annotations", "calibration")

# The share of training videos held out per recipe: the paper trains on every video (fixed threshold
# 0.35); vadpipe's default holds out a quarter for early stopping and the operating point.
_HOLDOUT = {"default": 0.25, "paper": 0.0}

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


def _print_operating_point(op: dict | None) -> None:
    if not op:
        return
    if op.get("method") == "fixed":
        click.echo(f"operating point: the paper's fixed threshold {op['threshold']:g}, no video gate "
                   "(no videos held out)", err=True)
        return
    held = op["heldout"]
    probability = op.get("video_probability_at_video_threshold")
    gate = (f"video threshold {op['video_threshold']:.4g} (P(anomalous) {probability:.2f})"
            if probability is not None else "no video gate")
    goal = (f"false alarms <= {op['target_false_alarm_rate']:g}" if op["method"] == "false_alarms"
            else "best interval F1 at IoU 0.3")
    click.echo(f"operating point ({goal}, on {held['normal_videos']} normal + {held['anomalous_videos']} anomalous "
               f"held-out videos): curve threshold {op['threshold']:.4g}, {gate}", err=True)
    line = (f"held-out: {held['normal_videos_flagged']}/{held['normal_videos']} normal videos get an interval "
            f"(95% upper bound on the true rate {100 * held['false_alarm_rate_upper95']:.0f}%), "
            f"{held['anomalous_videos_flagged']}/{held['anomalous_videos']} anomalous videos do")
    if held.get("intervals"):
        line += f"; interval F1 at IoU 0.3 {held['intervals']['iou_0.3']['f1']:.3f}"
    click.echo(line, err=True)
    for note in op.get("notes", []):
        click.secho(f"note: {note}", fg="yellow", err=True)


def _print_summary(run_dir: Path) -> dict:
    from vadpipe.model.run import SUMMARY_FILE, read_run_config

    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    config = read_run_config(run_dir)
    summary["operating_point"] = None if config.operating_point is None else dict(config.operating_point.entry)
    backbone = config.sections.get("backbone") or {}
    if backbone:
        click.echo(f"features' I3D network: {backbone.get('id') or 'unknown'} "
                   f"({'from the cache records' if backbone.get('source') == 'records' else backbone.get('source')})",
                   err=True)
    last = summary["last_epoch"]
    click.echo(f"last epoch ({last['epoch']}): loss {last['loss']:.4g}", err=True)
    if summary.get("selected_epoch") is not None:
        click.echo(f"early stopping kept the weights of epoch {summary['selected_epoch']} "
                   "(lowest loss on the held-out videos)", err=True)
    if summary["last_validation"]:
        val = summary["last_validation"]
        scores = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k.startswith("val_") and v is not None)
        click.echo(f"last validation (epoch {val['epoch']}): {scores}", err=True)
        for name, best in summary["best_epoch"].items():
            click.echo(f"best {name}: {best['value']:.4f} at epoch {best['epoch']}", err=True)
    _print_operating_point(summary["operating_point"])
    _print_ood(run_dir, summary)
    return summary


def _print_ood(run_dir: Path, summary: dict) -> None:
    from vadpipe.model.ood import load_distance

    distance = load_distance(run_dir)
    summary["ood"] = None if distance is None else distance.summary()
    if distance is not None:
        where = (f"{distance.threshold_videos} held-out videos" if distance.threshold_from == "heldout"
                 else f"{distance.threshold_videos} training videos, cross-fitted")
        click.echo(f"outside-footage check: a clip is outside beyond distance {distance.threshold:.2f} (the "
                   f"{distance.quantile:.0%} quantile of {distance.threshold_clips} clips of {where}); a video is "
                   f"outside when more than {distance.max_share:.0%} of its clips are", err=True)


def _flags(ctx: click.Context, names: list[str]) -> str:
    """The options ``names`` as the user would type them (``--align/--no-align`` for a flag pair)."""
    return ", ".join("/".join(p.opts + p.secondary_opts) for p in ctx.command.params if p.name in names)


def _recipe_config(recipe: str, *, epochs: int | None, min_steps: int | None, batch_size: int | None,
                   balanced: bool | None, lr: float | None, schedule: str | None, lr_milestone: int | None,
                   lr_decay: float | None, warmup_steps: int | None, views: str | None, align: bool | None,
                   block_len: int, attention: str,
                   kernel_size: int, loss_weights: str | None, w_sparsity: float | None, w_smooth: float | None,
                   w_align: float | None, w_mil: float | None, loss_norm: str | None, early_stopping: bool | None,
                   seed: int):
    """The recipe's TrainConfig with the options the user gave (None: the recipe's value) applied."""
    from dataclasses import replace

    from vadpipe.model.losses import WEIGHT_ASSIGNMENTS
    from vadpipe.model.net import ModelConfig
    from vadpipe.model.recipes import recipe_config

    base = recipe_config(recipe)
    if w_align is not None and not (base.align if align is None else align):
        raise ConfigError("--w-align weighs the alignment loss, which needs --align (two views per sample)")
    schedule = schedule or base.schedule
    if schedule == "cosine" and lr_milestone is not None:
        raise ConfigError("--lr-milestone applies to --schedule multistep; cosine decays every step")
    if schedule == "multistep" and warmup_steps is not None:
        raise ConfigError("--warmup-steps applies to --schedule cosine")

    def given(**values):
        return {k: v for k, v in values.items() if v is not None}

    loss = replace(base.loss, **(WEIGHT_ASSIGNMENTS[loss_weights] if loss_weights else {}))
    try:
        loss = replace(loss, **given(w_sparsity=w_sparsity, w_smooth=w_smooth, w_align=w_align, w_mil=w_mil,
                                     normalize=loss_norm))
        return replace(base, model=ModelConfig(attention=attention, kernel_size=kernel_size), loss=loss,
                       schedule=schedule, block_len=block_len, seed=seed,
                       **given(align=align, epochs=epochs, min_steps=min_steps, batch_size=batch_size,
                               balanced=balanced, lr=lr,
                               lr_milestone_epoch=lr_milestone, lr_decay=lr_decay, warmup_steps=warmup_steps,
                               early_stopping=early_stopping, views=views))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@click.command("train")
@click.option("--features", type=_DIR, default=None,
              help="A vadpipe feature cache, or a folder of <video>__<crop>.npy files (XD-Violence layout, "
                   "RGB/ is used when present).  [default: the workspace cache, features/]")
@click.option("--labels", "labels_csv", type=_FILE, default=None,
              help="CSV 'video,label' (label 0/1 or normal/anomalous) covering every video; without it labels come "
                   "from normal/ vs anomalous/ folders in the source paths, else from the _label_A (= normal) suffix.")
@click.option("--out", "out_dir", type=_DIR, default=None,
              help="Run folder to create.  [default: a new timestamped folder in the workspace runs/]")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Continue this run from its last checkpoint, with its own settings (only --epochs may change).")
@click.option("--recipe", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="default: vadpipe's recipe for few, long videos (per-video loss, class-balanced batches, a top-k "
                   "MIL term, one phase-shifted view and no alignment, at least 1,500 optimizer steps with warm-up "
                   "and cosine decay, early stopping on the held-out videos). paper: the authors' exact recipe (50 epochs, lr 1e-4 then 1e-5 after epoch "
                   "30, loss divided by the batch's steps), trained on every video with the fixed threshold 0.35. "
                   "The options below override single settings of the recipe.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.  [default: 50]")
@click.option("--min-steps", type=click.IntRange(min=0), default=None,
              help="Train for at least this many optimizer steps (raises the epochs on small sets).  "
                   "[default: 1500 (default recipe), 0 (paper)]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Samples (crop files) per step.  [default: 8]")
@click.option("--balanced/--no-balanced", default=None,
              help="Class-balanced batches (half normal, half anomalous).  [default: on (default recipe), off (paper)]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate (the peak, with --schedule cosine).  [default: 1e-4]")
@click.option("--schedule", type=click.Choice(["multistep", "cosine"]), default=None,
              help="multistep: lr x --lr-decay after --lr-milestone epochs (the authors' code); cosine: linear warm-up "
                   "over --warmup-steps optimizer steps, then a cosine decay to lr x --lr-decay.  "
                   "[default: cosine (default recipe), multistep (paper)]")
@click.option("--lr-milestone", type=click.IntRange(min=0), default=None,
              help="--schedule multistep: epoch after which the lr is multiplied by --lr-decay "
                   "(30: the authors' code; 10: the paper's text).  [default: 30]")
@click.option("--lr-decay", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Factor applied to the lr after --lr-milestone, or the cosine schedule's final share of the lr.  "
                   "[default: 0.01 (default recipe), 0.1 (paper)]")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
              help="--schedule cosine: optimizer steps of linear lr warm-up.  [default: 100]")
@click.option("--views", type=click.Choice(["random", "phase"]), default=None,
              help="The two augmented views: random (one random row per block of --block-len, the authors') or "
                   "phase (two different phase-shifted sub-sequences, the ones full-rate scoring interleaves).  "
                   "[default: phase (default recipe), random (paper)]")
@click.option("--align/--no-align", default=None,
              help="Two views per sample and the alignment loss, or one view and none (Table 1's 'w/o align' row).  "
                   "[default: off (default recipe), on (paper)]")
@click.option("--block-len", type=click.IntRange(min=1), default=3, show_default=True,
              help="Augmentation block length L: each view keeps one row per L rows (see --views).")
@click.option("--attention", type=click.Choice(["mlp", "gated"]), default="mlp", show_default=True,
              help="Attention head: mlp (the paper's) or gated.")
@click.option("--kernel-size", type=click.IntRange(min=1), default=5, show_default=True,
              help="Odd kernel size of the masked causal conv (active taps: the centre and before).")
@click.option("--loss-weights", type=click.Choice(["code", "paper"]), default=None,
              help="Sparsity/smoothness weights: 'code' = 2e-3/2e-8 (the authors' code, both recipes), "
                   "'paper' = 2e-8/2e-3 (the paper's eq. 6, read literally).  [default: code]")
@click.option("--w-sparsity", type=click.FloatRange(min=0), default=None,
              help="Sparsity weight (overrides --loss-weights).")
@click.option("--w-smooth", type=click.FloatRange(min=0), default=None,
              help="Smoothness weight (overrides --loss-weights).")
@click.option("--w-align", type=click.FloatRange(min=0), default=None,
              help="Alignment weight (with --align).  [default: 0.05 (default recipe), 0.5 (paper)]")
@click.option("--w-mil", type=click.FloatRange(min=0), default=None,
              help="Weight of the top-k MIL term on the weighted T-CAM.  [default: 1 (default recipe), 0 (paper)]")
@click.option("--loss-norm", type=click.Choice(["steps", "video"]), default=None,
              help="Divide the batch loss by its total step count (the authors' code) or per video.  "
                   "[default: video (default recipe), steps (paper)]")
@click.option("--early-stopping/--no-early-stopping", default=None,
              help="Keep the weights with the lowest loss on the held-out training videos (video labels only) "
                   "instead of the last ones; needs --holdout-fraction > 0.  "
                   "[default: on (default recipe), off (paper)]")
@click.option("--crops", default=None,
              help="Comma-separated crop indices to use, e.g. 0.  [default: every crop present]")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True, help="Seeds init, order and views.")
@click.option("--val-features", type=_DIR, default=None,
              help="Held-out features to score during training (an XD-Violence root uses RGBTest/).")
@click.option("--annotations", type=_FILE, default=None,
              help="XD-Violence annotations.txt for --val-features (absent videos are normal).")
@click.option("--val-every", type=click.IntRange(min=1), default=1, show_default=True, help="Validate every N epochs.")
@click.option("--holdout-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="Share of each class's training videos held out (seeded by --seed) for early stopping, to choose "
                   "the detection thresholds and to calibrate scores; the saved model is the one trained without "
                   "them. 0: train on every video and keep the paper's fixed threshold 0.35.  "
                   "[default: 0.25 (default recipe), 0 (paper)]")
@click.option("--operating-point", type=click.Choice(["false-alarms", "f1"]), default="false-alarms",
              show_default=True,
              help="false-alarms: at most --target-false-alarm-rate of held-out normal videos get an interval, "
                   "as many held-out anomalous videos as possible do; f1: best interval F1 at IoU 0.3 on the "
                   "held-out videos (needs --train-annotations).")
@click.option("--target-false-alarm-rate", type=click.FloatRange(min=0, max=1, max_open=True), default=0.05,
              show_default=True,
              help="Share of normal videos allowed to get an interval (--operating-point false-alarms).")
@click.option("--train-annotations", type=_FILE, default=None,
              help="Frame annotations of the training videos (XD-Violence annotations.txt format): needed for "
                   "--operating-point f1; with them interval scores are calibrated against real hits.")
@click.option("--calibration", type=click.Choice(["platt", "isotonic"]), default="platt", show_default=True,
              help="Score calibration on the held-out videos: platt (logistic on the score's logit; fine with few "
                   "videos) or isotonic (needs hundreds).")
@click.option("--features-backbone", type=click.Choice(list(BACKBONES)), default=None,
              help="The I3D network that made feature files without vadpipe records (the released XD-Violence and "
                   "UCF-Crime I3D features: kinetics400-imagenet); recorded in the run so detect extracts with it. "
                   "[default: the cache records' backbone; unknown for bare features]")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the run summary (last and best epoch) as JSON to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, *, features: Path | None, labels_csv: Path | None, out_dir: Path | None,
          resume_dir: Path | None, recipe: str, epochs: int | None, min_steps: int | None, batch_size: int | None,
          balanced: bool | None, lr: float | None, schedule: str | None, lr_milestone: int | None,
          lr_decay: float | None, warmup_steps: int | None, views: str | None, align: bool | None, block_len: int,
          attention: str, kernel_size: int, loss_weights: str | None, w_sparsity: float | None, w_smooth: float | None,
          w_align: float | None, w_mil: float | None, loss_norm: str | None, early_stopping: bool | None,
          crops: str | None, seed: int, val_features: Path | None, annotations: Path | None, val_every: int,
          holdout_fraction: float | None,
          operating_point: str, target_false_alarm_rate: float, train_annotations: Path | None, calibration: str,
          features_backbone: str | None, json_out: Path | None, quiet: bool) -> None:
    """Train the CSL-TAL model and write a run folder (weights, config, metrics, curves).

    --recipe default (vadpipe's) holds out a quarter of the training videos for early stopping and
    to choose the operating point detect uses; --recipe paper reproduces the authors' training
    (method.md §9) on every video. The run becomes the workspace's latest run (used by detect)
    when it lies in the workspace runs/ folder. Prints the run folder.
    """
    from dataclasses import replace

    from vadpipe.calibrated_training import CalibrationSpec, resume_calibrated, train_calibrated
    from vadpipe.model.run import new_run_dir, set_latest
    from vadpipe.model.train import ValidationSpec

    with _warnings_to_stderr():
        if resume_dir is not None:
            given = [name for name in _RUN_OPTIONS if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            if given:
                raise ConfigError(f"--resume continues a run with its own settings; drop {_flags(ctx, given)}")
            run_dir = resume_calibrated(resume_dir, epochs=epochs, show_progress=not quiet)
        else:
            given = [name for name in _CALIBRATION_OPTIONS
                     if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            if holdout_fraction is None:
                holdout_fraction = _HOLDOUT[recipe]
            if holdout_fraction == 0 and given:
                raise ConfigError(f"--holdout-fraction 0 holds out no videos to calibrate on; "
                                  f"drop {_flags(ctx, given)}")
            if operating_point == "f1" and "target_false_alarm_rate" in given:
                raise ConfigError("--target-false-alarm-rate applies to --operating-point false-alarms, not f1")
            spec = None if holdout_fraction == 0 else CalibrationSpec(
                holdout_fraction=holdout_fraction, operating_point=operating_point.replace("-", "_"),
                target_false_alarm_rate=target_false_alarm_rate, annotations=train_annotations, method=calibration)
            if (val_features is None) != (annotations is None):
                raise ConfigError("validation needs both --val-features and --annotations")
            config = _recipe_config(recipe, epochs=epochs, min_steps=min_steps, batch_size=batch_size,
                                    balanced=balanced, lr=lr, schedule=schedule, lr_milestone=lr_milestone,
                                    lr_decay=lr_decay, warmup_steps=warmup_steps, views=views, align=align,
                                    block_len=block_len, attention=attention, kernel_size=kernel_size,
                                    loss_weights=loss_weights, w_sparsity=w_sparsity, w_smooth=w_smooth,
                                    w_align=w_align, w_mil=w_mil, loss_norm=loss_norm,
                                    early_stopping=early_stopping, seed=seed)
            if config.early_stopping and spec is None:
                if early_stopping:
                    raise ConfigError("--early-stopping watches held-out videos; --holdout-fraction 0 holds out none")
                click.secho("note: no videos held out (--holdout-fraction 0): no early stopping, the last "
                            "epoch's weights are kept", fg="yellow", err=True)
                config = replace(config, early_stopping=False)
            if features is None:
                features = features_dir()
                if not features.is_dir():
                    raise DataError(f"no feature cache at {features}: "
                                    "run vadpipe extract first, or pass --features DIR")
            validation = None if val_features is None else ValidationSpec(val_features, annotations, val_every)
            run_dir = train_calibrated(features,
                                       out_dir=out_dir if out_dir is not None else new_run_dir(runs_dir()),
                                       config=config, calibration=spec, labels_csv=labels_csv,
                                       crops=_parse_crops(crops), validation=validation, show_progress=not quiet,
                                       features_backbone=features_backbone)
        if run_dir.resolve().parent == runs_dir().resolve():
            set_latest(runs_dir(), run_dir)
        summary = _print_summary(run_dir)
    if json_out is not None:
        from vadpipe.model.run import write_json

        write_json(json_out, {"run": str(run_dir), **summary})
    click.echo(str(run_dir))
