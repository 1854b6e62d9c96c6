"""Training CSL-TAL on a feature set: batched, deterministic on CPU, resumable (model/README.md §2-§5).

A batch of B samples is one forward pass: the K views of every sample are right-padded into a
``(B*K, T'max, F)`` tensor with a mask, and the loss excludes padded steps from every sum and
from the step count N (see :mod:`vadpipe.model.losses`). All randomness of epoch ``e`` (sample
order and view picks) comes from ``numpy.random.default_rng([seed, e])`` and the weights are
initialised from ``seed``, so a run is reproducible bit for bit on one machine, and a resumed
run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vadpipe._version import __version__
from vadpipe.errors import CheckpointError, ConfigError
from vadpipe.extract.fileio import remove_stale_temps

from .config import TrainConfig
from .curves import plot_curves
from .data import DataWarning, FeatureSet, preload
from .history import HELDOUT_LOSS, read_metrics, summarize, write_metrics
from .labels import open_training_set
from .losses import LOSS_PARTS, LossConfig, LossTerms, csl_loss
from .net import CSLTAL
from .reporting import ProgressReporter
from .run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CURVES_FILE,
    RUN_SCHEMA_VERSION,
    SUMMARY_FILE,
    has_checkpoint,
    load_best,
    load_checkpoint,
    read_run_config,
    save_checkpoint,
    save_run,
    write_json,
)
from .samplers import Batch, batches_per_epoch, iterate_batches
from .schedules import crossed, lr_at_epoch, lr_at_step, planned_epochs
from .selection import EarlyStopping
from .validation import ValidationSpec, Validator

__all__ = [
    "EpochHook",
    "batch_loss",
    "make_optimizer",
    "train_epoch",
    "train",
    "resume",
]

# Checkpoint after an epoch only once this many optimizer steps passed since the last one (and after
# the last epoch): on a few dozen videos an epoch is a handful of steps, and writing the 85 MB of
# weights and Adam moments after each would take longer than the training.
_CHECKPOINT_STEPS = 50


def batch_loss(model: CSLTAL, batch: Batch, *, loss_config: LossConfig) -> LossTerms:
    """One forward pass over every view of the batch (each distinct feature row once), then the CSL-TAL loss."""
    n_samples, n_views = batch.labels.shape[0], batch.n_views
    with_mil = loss_config.w_mil > 0
    out = model.forward_rows(batch.rows, batch.source, batch.mask.repeat_interleave(n_views, dim=0), with_tcam=with_mil)
    wtcam = out.weighted_tcam.view(n_samples, n_views, -1) if with_mil else None
    return csl_loss(
        out.attention.view(n_samples, n_views, -1),
        out.video_score.view(n_samples, n_views),
        batch.labels,
        batch.mask,
        config=loss_config,
        wtcam=wtcam,
    )


def make_optimizer(model: CSLTAL, *, config: TrainConfig) -> torch.optim.Adam:
    """Adam (betas 0.9/0.999, eps 1e-8, no weight decay) at ``config.lr``.

    The fused kernel is ~10x faster than the default per-tensor loop on CPU, where the update of
    7M parameters otherwise costs as much as a forward pass; same update rule, deterministic.
    """
    try:
        return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # an older torch or a device without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=config.lr, foreach=True)


def train_epoch(
    model: CSLTAL,
    optimizer: torch.optim.Optimizer,
    data: FeatureSet,
    *,
    config: TrainConfig,
    epoch: int,
    on_step: Callable[[dict[str, float]], None] | None = None,
    total_epochs: int | None = None,
    features: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """One pass over ``data`` (1-based ``epoch`` of ``total_epochs``, default :func:`planned_epochs`);
    returns the mean of each loss part over its batches and the epoch's last ``lr``.

    ``on_step`` receives each batch's loss parts (``LossTerms.as_floats``), e.g. for a progress bar;
    without it the parts are summed as tensors and read once, at the end of the epoch.
    ``features``: the items' arrays already in memory (`vadpipe.model.data.preload`), None to read files.
    """
    model.train()
    per_epoch = batches_per_epoch(
        [item.label for item in data.items], batch_size=config.batch_size, balanced=config.balanced
    )
    total_steps = per_epoch * (total_epochs if total_epochs is not None else planned_epochs(config, per_epoch))
    names = ("total", *LOSS_PARTS)
    sums = torch.zeros(len(names), dtype=torch.float64)  # float64 like the Python floats they replace
    lr, n_batches = lr_at_epoch(epoch, config=config), 0
    for batch in iterate_batches(data, config=config, epoch=epoch, features=features):
        lr = lr_at_step((epoch - 1) * per_epoch + n_batches + 1, epoch=epoch, total_steps=total_steps, config=config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        terms = batch_loss(model, batch, loss_config=config.loss)
        terms.total.backward()
        optimizer.step()
        n_batches += 1
        values = torch.stack([getattr(terms, name).detach() for name in names]).double()
        sums += values
        if on_step is not None:
            on_step(dict(zip(names, values.tolist())))
    losses = {
        ("loss" if name == "total" else f"loss_{name}"): value / n_batches for name, value in zip(names, sums.tolist())
    }
    return {**losses, "lr": lr}


# --------------------------------------------------------------------------- run folder outputs


def _run_config(
    config: TrainConfig,
    data: FeatureSet,
    *,
    labels_csv: Path | None,
    crops: Sequence[int] | None,
    validation: ValidationSpec | None,
) -> dict:
    return {
        "schema_version": RUN_SCHEMA_VERSION,
        "model": config.model.to_dict(),
        "training": config.to_dict(),
        "data": {
            **data.summary(),
            "labels_csv": str(Path(labels_csv).resolve()) if labels_csv else None,
            "crops_requested": list(crops) if crops is not None else None,
        },
        "validation": None
        if validation is None
        else {
            "features": str(Path(validation.features).resolve()),
            "annotations": str(Path(validation.annotations).resolve()),
            "every_epochs": validation.every_epochs,
        },
        "extraction": data.extraction,
        "vadpipe_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- the loop


class EpochHook(Protocol):
    """Called after every epoch's training; returns the metrics to add to that epoch's line (may be
    none). `vadpipe.model.validation.Validator` and `vadpipe.model.selection.EarlyStopping` are two."""

    def __call__(self, model: CSLTAL, *, epoch: int, last: bool) -> dict[str, float | None]: ...


def _fit(
    run_dir: Path,
    run_config: dict,
    config: TrainConfig,
    data: FeatureSet,
    *,
    resume_run: bool,
    show_progress: bool,
    validator: Validator | None,
    selection: FeatureSet | None,
) -> Path:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        model = CSLTAL(config.model)
    optimizer = make_optimizer(model, config=config)
    n_batches = batches_per_epoch(
        [item.label for item in data.items], batch_size=config.batch_size, balanced=config.balanced
    )
    total_epochs = planned_epochs(config, n_batches)
    stopper = None
    if selection is not None and config.early_stopping:
        stopper = EarlyStopping(
            selection,
            block_len=config.block_len,
            top_fraction=config.loss.mil_top_fraction,
            every_steps=config.select_every_steps,
            n_batches=n_batches,
        )
    hooks: list[EpochHook] = [hook for hook in (validator, stopper) if hook is not None]
    start, history = 0, []
    if resume_run and has_checkpoint(run_dir):  # else killed before its first checkpoint: start over
        start = load_checkpoint(run_dir, model=model, optimizer=optimizer)
        if start > total_epochs:
            raise ConfigError(f"{run_dir} is already trained for {start} epochs; ask for at least that many")
        history = read_metrics(run_dir, up_to_epoch=start)
        if stopper is not None:
            stopper.restore(load_best(run_dir), history, where=run_dir)
    features = preload(data) if start < total_epochs else None  # read once, not once per epoch
    with ProgressReporter(show_progress, n_batches, total_epochs) as reporter:
        for epoch in range(start + 1, total_epochs + 1):
            began = time.perf_counter()
            last = epoch == total_epochs
            on_step = reporter.start_epoch(epoch)
            line = {
                "epoch": epoch,
                **train_epoch(
                    model,
                    optimizer,
                    data,
                    config=config,
                    epoch=epoch,
                    on_step=on_step,
                    total_epochs=total_epochs,
                    features=features,
                ),
            }
            for hook in hooks:
                line.update(hook(model, epoch=epoch, last=last))
            line["time_s"] = round(time.perf_counter() - began, 3)
            history.append(line)
            if not math.isfinite(line["loss"]):
                write_metrics(run_dir, history)
                raise ConfigError(f"the loss became {line['loss']} in epoch {epoch}; lower --lr or check the features")
            # metrics, checkpoint and the progress line every _CHECKPOINT_STEPS steps: a small set makes
            # hundreds of few-step epochs
            if crossed(epoch, n_batches, _CHECKPOINT_STEPS) or last:
                write_metrics(run_dir, history)
                save_checkpoint(
                    run_dir,
                    epoch=epoch,
                    model=model,
                    optimizer=optimizer,
                    best=None if stopper is None else stopper.kept,
                )
                reporter.end_epoch(line)
    if not history:
        raise CheckpointError(f"{run_dir} has no finished epoch to report")
    kept = None if stopper is None else stopper.kept
    if kept is not None:
        model.load_state_dict(kept[1])
    save_run(run_dir, model, config=run_config)
    write_json(run_dir / SUMMARY_FILE, summarize(history, selected_epoch=None if kept is None else kept[0]))
    plot_curves(history, run_dir / CURVES_FILE)
    return run_dir


def _subset(data: FeatureSet, videos: Collection[str], *, what: str) -> FeatureSet:
    """Only the samples of ``videos``, which must all be in ``data`` (``what`` names them in the error)."""
    wanted = set(videos)
    unknown = sorted(wanted - set(data.videos))
    if unknown:
        raise ConfigError(f"{len(unknown)} {what} video(s) are not in {data.root}: {', '.join(unknown[:5])}")
    return replace(data, items=tuple(item for item in data.items if item.video in wanted))


def _restrict(data: FeatureSet, videos: Collection[str]) -> FeatureSet:
    """Only the samples of ``videos`` (e.g. all but the videos held out for calibration)."""
    data = _subset(data, videos, what="requested training")
    counts = data.label_counts()
    if not counts["normal"] or not counts["anomalous"]:
        raise ConfigError(
            f"the {len(set(videos))} requested training videos are all of one class; "
            "weakly supervised training needs both normal and anomalous videos"
        )
    return data


def _selection_set(data: FeatureSet, videos: Collection[str], *, trained: FeatureSet) -> FeatureSet:
    """The held-out videos early stopping watches: in the feature set, not trained on."""
    subset = _subset(data, videos, what="held-out")
    overlap = sorted(set(videos) & set(trained.videos))
    if overlap:
        raise ConfigError(f"{len(overlap)} held-out video(s) are also trained on, e.g. {overlap[0]}")
    return subset


def train(
    features: Path | str,
    *,
    out_dir: Path | str,
    config: TrainConfig = TrainConfig(),
    labels_csv: Path | str | None = None,
    crops: Sequence[int] | None = None,
    validation: ValidationSpec | None = None,
    show_progress: bool = False,
    videos: Collection[str] | None = None,
    heldout: Collection[str] | None = None,
    extra_config: Mapping[str, object] | None = None,
    data: FeatureSet | None = None,
) -> Path:
    """Train a model on the features under ``features`` and write a run folder.

    Args:
        features: a vadpipe cache folder or bare XD-Violence features (see :func:`scan_features`).
        out_dir: the run folder to create (must not hold a run already).
        config: hyper-parameters; ``config.model.feature_dim`` is replaced by the data's width.
        labels_csv: a ``video,label`` file; without it labels come from folders or names.
        crops: crop indices to train on (None = all present; every crop is its own sample).
        validation: held-out features and annotations to score during training.
        show_progress: draw a progress bar with the loss parts on stderr.
        videos: train on these videos only (None = all); recorded as ``data.videos`` so
            that a resumed run uses the same ones.
        heldout: videos of ``features`` (not trained on) that early stopping watches when
            ``config.early_stopping`` (video labels only; see `vadpipe.model.selection`).
        extra_config: more top-level config.json sections (kept on resume), e.g. what a
            later stage needs to know about the run.
        data: ``features`` already opened with ``labels_csv`` and ``crops``
            (`vadpipe.model.labels.open_training_set`), so that it is not scanned and hashed again;
            None opens it.

    Returns:
        ``out_dir``, holding config.json, weights.safetensors, metrics.jsonl, summary.json,
        curves.png and checkpoint/.

    Example:
        >>> run = train("features/", out_dir="runs/r1", config=TrainConfig(epochs=2))  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    if (out_dir / CONFIG_FILE).exists() or (out_dir / CHECKPOINT_DIR).exists():
        raise CheckpointError(
            f"{out_dir} already holds a run; resume it (vadpipe train --resume {out_dir}) or choose another --run"
        )
    everything = data = open_training_set(features, labels_csv=labels_csv, crops=crops) if data is None else data
    if videos is not None:
        data = _restrict(data, videos)
    selection = _selection_set(everything, heldout, trained=data) if heldout and config.early_stopping else None
    if config.early_stopping and selection is None:
        warnings.warn(
            "early stopping needs held-out videos and none were given: the last epoch's weights are kept",
            DataWarning,
            stacklevel=2,
        )
        config = replace(config, early_stopping=False)  # what the run really does, in its config.json
    val = None if validation is None else Validator(validation, crops=crops, block_len=config.block_len)
    if val is not None and val.data.feature_dim != data.feature_dim:
        raise ConfigError(f"validation features are {val.data.feature_dim} wide, training features {data.feature_dim}")
    config = replace(config, model=replace(config.model, feature_dim=data.feature_dim))
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = {
        **_run_config(config, data, labels_csv=labels_csv, crops=crops, validation=validation),
        **(extra_config or {}),
    }
    if videos is not None:
        run_config["data"]["videos"] = data.videos
    run_config["selection"] = (
        None
        if selection is None
        else {"videos": selection.videos, "metric": HELDOUT_LOSS, "every_steps": config.select_every_steps}
    )
    write_json(out_dir / CONFIG_FILE, run_config)  # now, so that an interrupted run can be resumed
    return _fit(
        out_dir,
        run_config,
        config,
        data,
        resume_run=False,
        show_progress=show_progress,
        validator=val,
        selection=selection,
    )


def resume(
    run_dir: Path | str, *, epochs: int | None = None, show_progress: bool = False, data: FeatureSet | None = None
) -> Path:
    """Continue a run from its last checkpoint, with its own settings and data (``epochs`` may grow,
    with the multistep schedule only; with early stopping the old last epoch keeps its evaluation).

    ``data``: the run's recorded features already opened with its recorded labels and crops, so
    that they are not scanned and hashed again (None opens them).

    Raises:
        CheckpointError: no checkpoint, or the training features changed since the run started.
    """
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    run_config, config, recorded = dict(saved.sections), saved.training, saved.data or {}
    missing = {"path", "labels_csv", "crops_requested", "n_samples", "feature_dim"} - set(recorded)
    if config is None or missing:
        what = "no training section" if config is None else f"data lacks {', '.join(sorted(missing))}"
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has unusable training settings: {what}")
    if epochs is not None and epochs != config.epochs:
        if config.schedule == "cosine":
            raise ConfigError(
                f"{run_dir} uses a cosine schedule, which ends where the run ends: more epochs would "
                "restart its decay; train a new run with more --epochs or --set min_steps"
            )
        config = replace(config, epochs=epochs)
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):  # temp files of a killed writer
        if folder.is_dir():
            remove_stale_temps(folder)
    if data is None:
        data = open_training_set(recorded["path"], labels_csv=recorded["labels_csv"], crops=recorded["crops_requested"])
    everything = data
    if recorded.get("videos") is not None:
        data = _restrict(data, recorded["videos"])
    selection = None
    if (saved.selection or {}).get("videos"):
        selection = _selection_set(everything, saved.selection["videos"], trained=data)
    if (len(data.items), data.feature_dim) != (recorded["n_samples"], recorded["feature_dim"]):
        raise CheckpointError(
            f"the features in {recorded['path']} changed since the run started "
            f"({recorded['n_samples']} samples of width {recorded['feature_dim']} then, "
            f"{len(data.items)} of width {data.feature_dim} now)"
        )
    val = None
    if saved.validation:
        spec = saved.validation
        spec = ValidationSpec(Path(spec["features"]), Path(spec["annotations"]), spec["every_epochs"])
        val = Validator(spec, crops=recorded["crops_requested"], block_len=config.block_len)
    run_config["training"] = config.to_dict()
    write_json(run_dir / CONFIG_FILE, run_config)
    return _fit(
        run_dir,
        run_config,
        config,
        data,
        resume_run=True,
        show_progress=show_progress,
        validator=val,
        selection=selection,
    )
