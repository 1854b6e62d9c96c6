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
                "loss_norm", "crops", "seed", "val_features", "annotations", "val_every")

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
    """Show data warnings (skipped files, undefined AUCs) as one yellow line each, every time."""
    from vadpipe.model.data import DataWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        click.secho(f"warning: {message}", fg="yellow", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        yield


def _print_summary(run_dir: Path) -> dict:
    from vadpipe.model.run import SUMMARY_FILE

    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    last = summary["last_epoch"]
    click.echo(f"last epoch ({last['epoch']}): loss {last['loss']:.4g}", err=True)
    if summary["last_validation"]:
        val = summary["last_validation"]
        scores = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k.startswith("val_") and v is not None)
        click.echo(f"last validation (epoch {val['epoch']}): {scores}", err=True)
        for name, best in summary["best_epoch"].items():
            click.echo(f"best {name}: {best['value']:.4f} at epoch {best['epoch']}", err=True)
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
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the run summary (last and best epoch) as JSON to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, *, features: Path | None, labels_csv: Path | None, out_dir: Path | None,
          resume_dir: Path | None, epochs: int | None, batch_size: int, lr: float, lr_milestone: int, lr_decay: float,
          no_align: bool, block_len: int, attention: str, kernel_size: int, loss_weights: str,
          w_sparsity: float | None, w_smooth: float | None, w_align: float, loss_norm: str, crops: str | None,
          seed: int, val_features: Path | None, annotations: Path | None, val_every: int, json_out: Path | None,
          quiet: bool) -> None:
    """Train the CSL-TAL model and write a run folder (weights, config, metrics, curves).

    Defaults reproduce the paper's configuration (method.md §9). The run becomes the workspace's
    latest run (used by detect) when it lies in the workspace runs/ folder. Prints the run folder.
    """
    from vadpipe.model.losses import LossConfig
    from vadpipe.model.net import ModelConfig
    from vadpipe.model.run import new_run_dir, set_latest
    from vadpipe.model.train import TrainConfig, ValidationSpec
    from vadpipe.model.train import resume as resume_run
    from vadpipe.model.train import train as train_run

    with _warnings_to_stderr():
        if resume_dir is not None:
            given = [name for name in _RUN_OPTIONS if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            if given:
                flags = ", ".join(p.opts[0] for p in ctx.command.params if p.name in given)
                raise ConfigError(f"--resume continues a run with its own settings; drop {flags}")
            run_dir = resume_run(resume_dir, epochs=epochs, show_progress=not quiet)
        else:
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
            run_dir = train_run(features,
                                out_dir=out_dir if out_dir is not None else new_run_dir(runs_dir()),
                                config=config, labels_csv=labels_csv, crops=_parse_crops(crops),
                                validation=validation, show_progress=not quiet)
        if run_dir.resolve().parent == runs_dir().resolve():
            set_latest(runs_dir(), run_dir)
        summary = _print_summary(run_dir)
    if json_out is not None:
        from vadpipe.model.run import write_json

        write_json(json_out, {"run": str(run_dir), **summary})
    click.echo(str(run_dir))
