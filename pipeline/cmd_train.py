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
from vadpipe.workspace import features_dir, runs_dir

__all__ = ["train"]

# Options that define a run; --resume takes them from the run's config.json instead.
_RUN_OPTIONS = ("features", "labels_csv", "out_dir", "batch_size", "lr", "lr_milestone", "lr_decay", "no_align",
                "block_len", "attention", "kernel_size", "loss_weights", "w_sparsity", "w_smooth", "w_align",
                "loss_norm", "crops", "seed", "val_features", "annotations", "val_every", "holdout_fraction",
                "operating_point", "target_false_alarm_rate", "train_annotations", "calibration")
# Options that only mean something when videos are held out for calibration.
_CALIBRATION_OPTIONS = ("operating_point", "target_false_alarm_rate", "train_annotations", "calibration")

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
    summary["operating_point"] = read_run_config(run_dir).get("operating_point")
    last = summary["last_epoch"]
    click.echo(f"last epoch ({last['epoch']}): loss {last['loss']:.4g}", err=True)
    if summary["last_validation"]:
        val = summary["last_validation"]
        scores = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k.startswith("val_") and v is not None)
        click.echo(f"last validation (epoch {val['epoch']}): {scores}", err=True)
        for name, best in summary["best_epoch"].items():
            click.echo(f"best {name}: {best['value']:.4f} at epoch {best['epoch']}", err=True)
    _print_operating_point(summary["operating_point"])
    return summary


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
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.  [default: 50]")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Samples (crop files) per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Adam learning rate.")
@click.option("--lr-milestone", type=click.IntRange(min=0), default=30, show_default=True,
              help="Epoch after which the lr is multiplied by --lr-decay "
                   "(30: the authors' code; 10: the paper's text).")
@click.option("--lr-decay", type=click.FloatRange(min=0, max=1, min_open=True), default=0.1, show_default=True,
              help="Factor applied to the lr after --lr-milestone.")
@click.option("--no-align", is_flag=True, help="One view per sample and no alignment loss (Table 1's 'w/o align' row).")
@click.option("--block-len", type=click.IntRange(min=1), default=3, show_default=True,
              help="Augmentation block length L: each view keeps one random row per L rows.")
@click.option("--attention", type=click.Choice(["mlp", "gated"]), default="mlp", show_default=True,
              help="Attention head: mlp (the paper's) or gated.")
@click.option("--kernel-size", type=click.IntRange(min=1), default=5, show_default=True,
              help="Odd kernel size of the masked causal conv (active taps: the centre and before).")
@click.option("--loss-weights", type=click.Choice(["code", "paper"]), default="code", show_default=True,
              help="Default sparsity/smoothness weights: 'code' = 2e-3/2e-8 (the authors' code), "
                   "'paper' = 2e-8/2e-3 (the paper's eq. 6, read literally).")
@click.option("--w-sparsity", type=click.FloatRange(min=0), default=None,
              help="Sparsity weight (overrides --loss-weights).")
@click.option("--w-smooth", type=click.FloatRange(min=0), default=None,
              help="Smoothness weight (overrides --loss-weights).")
@click.option("--w-align", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Alignment weight.")
@click.option("--loss-norm", type=click.Choice(["steps", "video"]), default="steps", show_default=True,
              help="Divide the batch loss by its total step count (the authors' code) or per video.")
@click.option("--crops", default=None,
              help="Comma-separated crop indices to use, e.g. 0.  [default: every crop present]")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True, help="Seeds init, order and views.")
@click.option("--val-features", type=_DIR, default=None,
              help="Held-out features to score during training (an XD-Violence root uses RGBTest/).")
@click.option("--annotations", type=_FILE, default=None,
              help="XD-Violence annotations.txt for --val-features (absent videos are normal).")
@click.option("--val-every", type=click.IntRange(min=1), default=1, show_default=True, help="Validate every N epochs.")
@click.option("--holdout-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.25, show_default=True,
              help="Share of each class's training videos held out (seeded by --seed) to choose the detection "
                   "thresholds and calibrate scores; the saved model is the one trained without them. "
                   "0: train on every video and keep the paper's fixed threshold 0.35.")
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
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the run summary (last and best epoch) as JSON to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, *, features: Path | None, labels_csv: Path | None, out_dir: Path | None,
          resume_dir: Path | None, epochs: int | None, batch_size: int, lr: float, lr_milestone: int, lr_decay: float,
          no_align: bool, block_len: int, attention: str, kernel_size: int, loss_weights: str,
          w_sparsity: float | None, w_smooth: float | None, w_align: float, loss_norm: str, crops: str | None,
          seed: int, val_features: Path | None, annotations: Path | None, val_every: int, holdout_fraction: float,
          operating_point: str, target_false_alarm_rate: float, train_annotations: Path | None, calibration: str,
          json_out: Path | None, quiet: bool) -> None:
    """Train the CSL-TAL model and write a run folder (weights, config, metrics, curves).

    Defaults reproduce the paper's configuration (method.md §9), except that a quarter of the
    training videos are held out to choose the operating point detect uses (--holdout-fraction 0
    trains on all, as the paper). The run becomes the workspace's latest run (used by detect)
    when it lies in the workspace runs/ folder. Prints the run folder.
    """
    from vadpipe.calibrated_training import CalibrationSpec, calibrate_run, train_calibrated
    from vadpipe.model.losses import LossConfig
    from vadpipe.model.net import ModelConfig
    from vadpipe.model.run import new_run_dir, set_latest
    from vadpipe.model.train import TrainConfig, ValidationSpec
    from vadpipe.model.train import resume as resume_run

    with _warnings_to_stderr():
        if resume_dir is not None:
            given = [name for name in _RUN_OPTIONS if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            if given:
                flags = ", ".join(p.opts[0] for p in ctx.command.params if p.name in given)
                raise ConfigError(f"--resume continues a run with its own settings; drop {flags}")
            run_dir = resume_run(resume_dir, epochs=epochs, show_progress=not quiet)
            calibrate_run(run_dir)  # a no-op for runs trained without held-out videos
        else:
            given = [name for name in _CALIBRATION_OPTIONS
                     if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            if holdout_fraction == 0 and given:
                flags = ", ".join(p.opts[0] for p in ctx.command.params if p.name in given)
                raise ConfigError(f"--holdout-fraction 0 holds out no videos to calibrate on; drop {flags}")
            if operating_point == "f1" and "target_false_alarm_rate" in given:
                raise ConfigError("--target-false-alarm-rate applies to --operating-point false-alarms, not f1")
            spec = None if holdout_fraction == 0 else CalibrationSpec(
                holdout_fraction=holdout_fraction, operating_point=operating_point.replace("-", "_"),
                target_false_alarm_rate=target_false_alarm_rate, annotations=train_annotations, method=calibration)
            if (val_features is None) != (annotations is None):
                raise ConfigError("validation needs both --val-features and --annotations")
            try:
                overrides = {k: v for k, v in (("w_sparsity", w_sparsity), ("w_smooth", w_smooth)) if v is not None}
                config = TrainConfig(
                    model=ModelConfig(attention=attention, kernel_size=kernel_size),
                    loss=LossConfig.from_assignment(loss_weights, w_align=w_align, normalize=loss_norm, **overrides),
                    epochs=epochs if epochs is not None else TrainConfig().epochs, batch_size=batch_size, lr=lr,
                    lr_milestone_epoch=lr_milestone, lr_decay=lr_decay, align=not no_align, block_len=block_len,
                    seed=seed,
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            if features is None:
                features = features_dir()
                if not features.is_dir():
                    raise DataError(f"no feature cache at {features}: "
                                    "run vadpipe extract first, or pass --features DIR")
            validation = None if val_features is None else ValidationSpec(val_features, annotations, val_every)
            run_dir = train_calibrated(features,
                                       out_dir=out_dir if out_dir is not None else new_run_dir(runs_dir()),
                                       config=config, calibration=spec, labels_csv=labels_csv,
                                       crops=_parse_crops(crops), validation=validation, show_progress=not quiet)
        if run_dir.resolve().parent == runs_dir().resolve():
            set_latest(runs_dir(), run_dir)
        summary = _print_summary(run_dir)
    if json_out is not None:
        from vadpipe.model.run import write_json

        write_json(json_out, {"run": str(run_dir), **summary})
    click.echo(str(run_dir))
