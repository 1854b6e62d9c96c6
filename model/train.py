"""Training CSL-TAL on a feature set: batched, deterministic on CPU, resumable (method.md §2-§5).

A batch of B samples is one forward pass: the K views of every sample are right-padded into a
``(B*K, T'max, F)`` tensor with a mask, and the loss excludes padded steps from every sum and
from the step count N (see :mod:`vadpipe.model.losses`). All randomness of epoch ``e`` (sample
order and view picks) comes from ``numpy.random.default_rng([seed, e])`` and the weights are
initialised from ``seed``, so a run is reproducible bit for bit on one machine, and a resumed
run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vadpipe._version import __version__
from vadpipe.errors import CheckpointError, ConfigError
from vadpipe.extract.fileio import atomic_write_bytes, atomic_write_text, remove_stale_temps

from .augment import VIEW_MODES, chunk_start_indices, view_indices
from .data import (
    DataWarning,
    FeatureSet,
    clip_geometry,
    labels_from_annotations,
    load_item,
    open_training_set,
    parse_annotations,
    scan_features,
)
from .losses import LossConfig, LossTerms, csl_loss
from .net import CSLTAL, ModelConfig
from .selection import HELDOUT_LOSS, VideoScorer, heldout_scores
from .run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CURVES_FILE,
    METRICS_FILE,
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

__all__ = [
    "TrainConfig",
    "ValidationSpec",
    "Batch",
    "make_batch",
    "iterate_batches",
    "epoch_batches",
    "batches_per_epoch",
    "planned_epochs",
    "batch_loss",
    "make_optimizer",
    "train_epoch",
    "lr_at_epoch",
    "lr_at_step",
    "train",
    "resume",
]

_LOSS_PARTS = ("bce", "sparsity", "smoothness", "alignment", "mil")
SCHEDULES = ("multistep", "cosine")
# Checkpoint after an epoch only once this many optimizer steps passed since the last one (and after
# the last epoch): on a few dozen videos an epoch is a handful of steps, and writing the 85 MB of
# weights and Adam moments after each would take longer than the training.
_CHECKPOINT_STEPS = 50
_VAL_METRICS = ("val_video_auc", "val_frame_auc")
_VAL_BATCH = 32


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyper-parameter; the defaults are the paper's configuration (method.md §9).
    vadpipe's default recipe is :func:`vadpipe.model.recipes.recipe_config` ``("default")``.

    Args:
        model: network settings (``feature_dim`` is taken from the data when training).
        loss: loss weights and normalisation.
        epochs: number of passes over the training samples.
        batch_size: samples (crop files) per optimizer step.
        lr: Adam learning rate before the milestone.
        lr_milestone_epoch: after this epoch the lr is multiplied by ``lr_decay`` (30 in the
            authors' code, 10 in the paper's text).
        lr_decay: the factor applied at the milestone.
        align: two views per sample and the alignment loss (False: one view, Table 1's
            "w/o align" row).
        block_len: L, the augmentation block length.
        seed: seeds weight init, sample order and view picks.
        schedule: ``"multistep"`` (the lr drops by ``lr_decay`` after ``lr_milestone_epoch``,
            the authors' code) or ``"cosine"`` (linear warm-up over ``warmup_steps`` optimizer
            steps, then a cosine decay to ``lr * lr_decay`` at the last step).
        warmup_steps: optimizer steps of linear warm-up (``"cosine"`` only).
        min_steps: train for at least this many optimizer steps: the epochs are raised to
            reach it, so that a few dozen videos get as many updates as they need while a
            large set keeps its epochs.
        balanced: every batch holds half normal and half anomalous samples; an epoch covers
            the larger class once and cycles through reshuffles of the smaller one.
        early_stopping: keep the weights of the evaluation with the lowest held-out loss
            (when held-out videos are given to :func:`train`), instead of the last ones.
        select_every_steps: evaluate on the held-out videos after each epoch that passes a
            multiple of this many optimizer steps, and after the last.
        views: ``"random"`` (an independent row per block and view, the authors') or
            ``"phase"`` (each view one phase-shifted subsequence, see :func:`view_indices`).
    """

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    lr_milestone_epoch: int = 30
    lr_decay: float = 0.1
    align: bool = True
    block_len: int = 3
    seed: int = 1
    schedule: str = "multistep"
    warmup_steps: int = 0
    min_steps: int = 0
    balanced: bool = False
    early_stopping: bool = False
    select_every_steps: int = 50
    views: str = "random"

    def __post_init__(self) -> None:
        if self.views not in VIEW_MODES:
            raise ValueError(f"views must be one of {VIEW_MODES}, got {self.views!r}")
        for name in ("warmup_steps", "min_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "block_len", "select_every_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.lr_milestone_epoch, int) or self.lr_milestone_epoch < 0:
            raise ValueError(f"lr_milestone_epoch must be an int >= 0, got {self.lr_milestone_epoch!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def n_views(self) -> int:
        return 2 if self.align else 1

    def to_dict(self) -> dict:
        """The training settings (model settings are stored separately in a run's config)."""
        data = asdict(self)
        del data["model"]
        return {**data, "n_views": self.n_views}

    @classmethod
    def from_dict(cls, training: dict, *, model: dict) -> "TrainConfig":
        values = {k: v for k, v in training.items() if k != "n_views"}
        return cls(model=ModelConfig.from_dict(model), loss=LossConfig(**values.pop("loss", {})), **values)


@dataclass(frozen=True)
class ValidationSpec:
    """Held-out features scored every ``every_epochs`` epochs against frame annotations.

    ``annotations`` is an XD-Violence ``annotations.txt`` (videos absent from it are normal).
    """

    features: Path
    annotations: Path
    every_epochs: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.every_epochs, int) or self.every_epochs < 1:
            raise ValueError(f"every_epochs must be an int >= 1, got {self.every_epochs!r}")


@dataclass(frozen=True)
class Batch:
    """One training batch. x: (B*K, T, F) float32, views of sample b at rows b*K .. b*K+K-1;
    mask: (B, T) bool, valid steps of sample b (shared by its views); labels: (B,) float32."""

    x: Tensor
    mask: Tensor
    labels: Tensor

    @property
    def n_views(self) -> int:
        return self.x.shape[0] // self.labels.shape[0]


def make_batch(arrays: Sequence[np.ndarray], views: Sequence[np.ndarray], labels: Sequence[int]) -> Batch:
    """Right-pad the views of several samples into one Batch.

    Args:
        arrays: per sample a (T_b, F) float32 array.
        views: per sample a (K, T'_b) index array into its rows (see :func:`view_indices`).
        labels: per sample 0 (normal) or 1 (anomalous).
    """
    n_views = views[0].shape[0]
    lengths = [v.shape[1] for v in views]
    steps = max(lengths)
    x = np.zeros((len(arrays) * n_views, steps, arrays[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(arrays), steps), dtype=bool)
    for b, (array, idx) in enumerate(zip(arrays, views)):
        for k in range(n_views):
            x[b * n_views + k, : lengths[b]] = array[idx[k]]
        mask[b, : lengths[b]] = True
    return Batch(torch.from_numpy(x), torch.from_numpy(mask), torch.tensor(labels, dtype=torch.float32))


def _class_counts(labels: np.ndarray) -> tuple[int, int]:
    return int((labels == 0).sum()), int((labels == 1).sum())


def batches_per_epoch(labels: Sequence[int], *, batch_size: int, balanced: bool) -> int:
    """Optimizer steps in one epoch over samples with these labels."""
    labels = np.asarray(labels)
    n_normal, n_anomalous = _class_counts(labels)
    if balanced and n_normal and n_anomalous:
        return math.ceil(2 * max(n_normal, n_anomalous) / batch_size)
    return math.ceil(len(labels) / batch_size)


def epoch_batches(labels: Sequence[int], *, batch_size: int, balanced: bool,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Sample indices of each batch of one epoch.

    Unbalanced (the authors' sampler): one shuffle, consecutive slices, the last batch smaller.
    Balanced: every batch holds ``batch_size // 2`` samples of each class (an odd size gives the
    extra slot to the anomalous class in even batches and the normal class in odd ones). Each
    class is drawn from back-to-back reshuffles of itself, so the larger class is seen once per
    epoch and the smaller one cycles, no sample more than once more often than another. When a
    class has fewer samples than its slots in a batch (or at the seam between two reshuffles),
    a sample can appear twice in one batch, with different random views.
    Weak labels are most informative in contrast: a batch of only normal videos teaches the
    attention nothing about what to pick.
    """
    labels = np.asarray(labels)
    n_normal, n_anomalous = _class_counts(labels)
    if not (balanced and n_normal and n_anomalous):
        order = rng.permutation(len(labels))
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    n_batches = batches_per_epoch(labels, batch_size=batch_size, balanced=True)
    slots = [(batch_size // 2 + (batch_size % 2 if i % 2 == 0 else 0)) for i in range(n_batches)]  # anomalous
    streams = {}
    for label, needed in ((1, sum(slots)), (0, n_batches * batch_size - sum(slots))):
        members = np.flatnonzero(labels == label)
        repeats = math.ceil(needed / len(members))
        streams[label] = np.concatenate([rng.permutation(members) for _ in range(repeats)])[:needed]
    batches, taken = [], {0: 0, 1: 0}
    for anomalous in slots:
        counts = {1: anomalous, 0: batch_size - anomalous}
        batch = []
        for label in (1, 0):
            batch.append(streams[label][taken[label] : taken[label] + counts[label]])
            taken[label] += counts[label]
        batches.append(np.concatenate(batch))
    return batches


def iterate_batches(data: FeatureSet, *, config: TrainConfig, epoch: int) -> Iterator[Batch]:
    """The batches of one epoch (see :func:`epoch_batches`), with fresh random views."""
    rng = np.random.default_rng([config.seed, epoch])
    labels = [item.label for item in data.items]
    for indices in epoch_batches(labels, batch_size=config.batch_size, balanced=config.balanced, rng=rng):
        items = [data.items[i] for i in indices]
        arrays = [load_item(item, feature_dim=data.feature_dim) for item in items]
        views = [view_indices(a.shape[0], n_views=config.n_views, block_len=config.block_len, rng=rng,
                              mode=config.views) for a in arrays]
        yield make_batch(arrays, views, [item.label for item in items])


def batch_loss(model: CSLTAL, batch: Batch, *, loss_config: LossConfig) -> LossTerms:
    """One forward pass over every view of the batch, then the CSL-TAL loss."""
    n_samples, n_views = batch.labels.shape[0], batch.n_views
    with_mil = loss_config.w_mil > 0
    out = model(batch.x, batch.mask.repeat_interleave(n_views, dim=0), with_tcam=with_mil)
    wtcam = out.weighted_tcam.view(n_samples, n_views, -1) if with_mil else None
    return csl_loss(out.attention.view(n_samples, n_views, -1), out.video_score.view(n_samples, n_views),
                    batch.labels, batch.mask, config=loss_config, wtcam=wtcam)


def make_optimizer(model: CSLTAL, *, config: TrainConfig) -> torch.optim.Adam:
    """Adam (betas 0.9/0.999, eps 1e-8, no weight decay) at ``config.lr``.

    The fused kernel is ~10x faster than the default per-tensor loop on CPU, where the update of
    7M parameters otherwise costs as much as a forward pass; same update rule, deterministic.
    """
    try:
        return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # an older torch or a device without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=config.lr, foreach=True)


def lr_at_epoch(epoch: int, *, config: TrainConfig) -> float:
    """The learning rate of 1-based ``epoch``: MultiStepLR with one milestone, stepped per epoch."""
    return config.lr * (config.lr_decay if epoch > config.lr_milestone_epoch else 1.0)


def lr_at_step(step: int, *, epoch: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate of 1-based optimizer ``step`` (in 1-based ``epoch``) of a ``total_steps`` run."""
    if config.schedule == "multistep":
        return lr_at_epoch(epoch, config=config)
    if step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    floor = config.lr * config.lr_decay
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def planned_epochs(config: TrainConfig, n_batches: int) -> int:
    """``config.epochs``, raised so that the run makes at least ``config.min_steps`` optimizer steps."""
    return max(config.epochs, math.ceil(config.min_steps / n_batches))


def train_epoch(model: CSLTAL, optimizer: torch.optim.Optimizer, data: FeatureSet, *, config: TrainConfig, epoch: int,
                on_step: Callable[[dict[str, float]], None] | None = None, total_epochs: int | None = None
                ) -> dict[str, float]:
    """One pass over ``data`` (1-based ``epoch`` of ``total_epochs``, default :func:`planned_epochs`);
    returns the mean of each loss part over its batches and the epoch's last ``lr``.

    ``on_step`` receives each batch's loss parts (``LossTerms.as_floats``), e.g. for a progress bar.
    """
    model.train()
    per_epoch = batches_per_epoch([item.label for item in data.items], batch_size=config.batch_size,
                                  balanced=config.balanced)
    total_steps = per_epoch * (total_epochs if total_epochs is not None else planned_epochs(config, per_epoch))
    sums = dict.fromkeys(("total", *_LOSS_PARTS), 0.0)
    lr, n_batches = lr_at_epoch(epoch, config=config), 0
    for batch in iterate_batches(data, config=config, epoch=epoch):
        lr = lr_at_step((epoch - 1) * per_epoch + n_batches + 1, epoch=epoch, total_steps=total_steps, config=config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        terms = batch_loss(model, batch, loss_config=config.loss)
        terms.total.backward()
        optimizer.step()
        n_batches += 1
        values = terms.as_floats()
        for name, value in values.items():
            sums[name] += value
        if on_step is not None:
            on_step(values)
    losses = {("loss" if name == "total" else f"loss_{name}"): value / n_batches for name, value in sums.items()}
    return {**losses, "lr": lr}


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Validation:
    data: FeatureSet
    frame_labels: dict[str, np.ndarray]  # video -> (n_clips, clip_len) bool, per clip its frames' labels
    every_epochs: int


def _prepare_validation(spec: ValidationSpec, *, crops: Sequence[int] | None) -> _Validation:
    annotations = parse_annotations(spec.annotations)
    data = labels_from_annotations(scan_features(spec.features, split="test", crops=crops), annotations)
    frame_labels = {}
    for item in data.items:
        if item.video in frame_labels:
            continue
        length, starts = clip_geometry(item)
        frames = starts[:, None] + np.arange(length)[None, :]  # (T, clip_len) source frames of each clip
        intervals = next((annotations[n] for n in item.names() if n in annotations), [])
        labels = np.zeros(frames.shape, dtype=bool)
        for start, end in intervals:  # half-open [start, end)
            labels |= (frames >= start) & (frames < end)
        frame_labels[item.video] = labels
    return _Validation(data, frame_labels, spec.every_epochs)


def _auc(labels: np.ndarray, scores: np.ndarray, what: str) -> float | None:
    from sklearn.metrics import roc_auc_score

    if labels.min() == labels.max():
        warnings.warn(f"validation {what} AUC is undefined: every label is {int(labels[0])}", DataWarning, stacklevel=3)
        return None
    return float(roc_auc_score(labels, scores))


@torch.no_grad()
def _validate(model: CSLTAL, val: _Validation, *, block_len: int) -> dict[str, float | None]:
    """Video AUC (one score per crop file) and a simple frame AUC: the weighted T-CAM of every
    L-th clip (the authors' test subsampling), repeated over that clip's frames, against the
    annotated frames. The full Table 1 protocols live in ``vadpipe evaluate``."""
    model.eval()
    video_scores, video_labels, frame_scores, frame_labels = [], [], [], []
    items = val.data.items
    for start in range(0, len(items), _VAL_BATCH):
        chunk = items[start : start + _VAL_BATCH]
        keep = [chunk_start_indices(item.n_steps, block_len=block_len) for item in chunk]
        arrays = [load_item(item, feature_dim=val.data.feature_dim) for item in chunk]
        batch = make_batch(arrays, [k[None, :] for k in keep], [item.label for item in chunk])
        out = model(batch.x, batch.mask)
        wtcam = out.weighted_tcam.numpy()
        for row, (item, idx) in enumerate(zip(chunk, keep)):
            labels = val.frame_labels[item.video][idx]  # (T', clip_len)
            frame_labels.append(labels.ravel())
            frame_scores.append(np.repeat(wtcam[row, : idx.size], labels.shape[1]))
        video_scores.extend(out.video_score.tolist())
        video_labels.extend(item.label for item in chunk)
    return {
        "val_video_auc": _auc(np.asarray(video_labels), np.asarray(video_scores), "video"),
        "val_frame_auc": _auc(np.concatenate(frame_labels), np.concatenate(frame_scores), "frame"),
    }


def _crossed(epoch: int, n_batches: int, every_steps: int) -> bool:
    """Whether epoch ``epoch`` (1-based) passed a multiple of ``every_steps`` optimizer steps; a
    function of the epoch alone, so a resumed run checkpoints and evaluates where an
    uninterrupted one does."""
    return (epoch * n_batches) // every_steps > ((epoch - 1) * n_batches) // every_steps


# --------------------------------------------------------------------------- run folder outputs


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(line) + "\n" for line in history))


def _read_metrics(run_dir: Path, *, up_to_epoch: int) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["epoch"] <= up_to_epoch]


def _summary(history: list[dict], *, selected_epoch: int | None = None) -> dict:
    """Last-epoch and best-epoch metrics, labelled (the best epoch per validation metric), and the
    epoch whose weights early stopping kept (None: the last epoch's)."""
    best = {}
    for name in _VAL_METRICS:
        scored = [(line[name], line["epoch"]) for line in history if line.get(name) is not None]
        if scored:
            value, epoch = max(scored, key=lambda p: (p[0], -p[1]))  # earliest epoch on ties
            best[name] = {"epoch": epoch, "value": value}
    last_val = next((line for line in reversed(history) if any(line.get(n) is not None for n in _VAL_METRICS)), None)
    return {
        "last_epoch": history[-1],
        "last_validation": last_val,
        "best_epoch": best,
        "selected_epoch": selected_epoch,
        "note": "best_epoch picks, per validation metric, the epoch where it was highest (on the validation set); "
                "selected_epoch is the epoch whose weights were saved (early stopping on held-out training "
                "videos; null: the last epoch)",
    }


def _plot_curves(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # the OO API: no global backend state

    epochs = [line["epoch"] for line in history]
    has_val = any(line.get(n) is not None for line in history for n in _VAL_METRICS)
    fig = Figure(figsize=(10 if has_val else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    for name in ("loss", *(f"loss_{p}" for p in _LOSS_PARTS)):
        values = [line[name] if line.get(name, 0) > 0 else np.nan for line in history]
        if not all(np.isnan(values)):
            axes[0].plot(epochs, values, label=name, lw=2 if name == "loss" else 1)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="loss (weighted, normalised)", title="training loss")
    axes[0].legend(fontsize="small")
    if has_val:
        for name in _VAL_METRICS:
            points = [(line["epoch"], line[name]) for line in history if line.get(name) is not None]
            if points:
                axes[1].plot(*zip(*points), marker="o", label=name)
        axes[1].set(xlabel="epoch", ylabel="AUC", title="validation", ylim=(0, 1))
        axes[1].legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def _run_config(config: TrainConfig, data: FeatureSet, *, labels_csv: Path | None, crops: Sequence[int] | None,
                validation: ValidationSpec | None) -> dict:
    return {
        "schema_version": RUN_SCHEMA_VERSION,
        "model": config.model.to_dict(),
        "training": config.to_dict(),
        "data": {**data.summary(), "labels_csv": str(Path(labels_csv).resolve()) if labels_csv else None,
                 "crops_requested": list(crops) if crops is not None else None},
        "validation": None if validation is None else {
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


class _Reporter:
    """A rich progress bar with the running loss parts (stderr), or nothing."""

    def __init__(self, enabled: bool, n_batches: int, epochs: int) -> None:
        self.enabled, self.n_batches, self.epochs = enabled, n_batches, epochs
        self._progress = None

    def __enter__(self) -> "_Reporter":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                                      console=Console(stderr=True))
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.n_batches, losses="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int) -> Callable[[dict[str, float]], None] | None:
        if self._progress is None:
            return None
        self._progress.reset(self._task, total=self.n_batches, description=f"epoch {epoch}/{self.epochs}", losses="")
        sums = dict.fromkeys(("total", *_LOSS_PARTS), 0.0)
        count = [0]

        def on_step(values: dict[str, float]) -> None:
            count[0] += 1
            for name, value in values.items():
                sums[name] += value
            text = " ".join(f"{name} {sums[name] / count[0]:.3g}" for name in sums)
            self._progress.update(self._task, advance=1, losses=f"loss {text.removeprefix('total ')}")

        return on_step

    def end_epoch(self, line: dict) -> None:
        if self._progress is None:
            return
        parts = ", ".join(f"{p} {line[f'loss_{p}']:.3g}" for p in _LOSS_PARTS)
        val = "".join(f"  {n} {line[n]:.4f}" for n in (*_VAL_METRICS, HELDOUT_LOSS) if line.get(n) is not None)
        self._progress.console.print(f"epoch {line['epoch']:>3}/{self.epochs}  lr {line['lr']:.0e}  "
                                     f"loss {line['loss']:.4g} ({parts}){val}  [{line['time_s']:.1f} s]",
                                     markup=False, highlight=False)


def _fit(run_dir: Path, run_config: dict, config: TrainConfig, data: FeatureSet, val: _Validation | None, *,
         resume_run: bool, show_progress: bool, selection: FeatureSet | None = None,
         scorer: VideoScorer | None = None) -> Path:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        model = CSLTAL(config.model)
    optimizer = make_optimizer(model, config=config)
    n_batches = batches_per_epoch([item.label for item in data.items], batch_size=config.batch_size,
                                  balanced=config.balanced)
    total_epochs = planned_epochs(config, n_batches)
    select = selection is not None and config.early_stopping
    start, history, best = 0, [], None  # best: (epoch, held-out loss, state dict)
    if resume_run and has_checkpoint(run_dir):  # else killed before its first checkpoint: start over
        start = load_checkpoint(run_dir, model=model, optimizer=optimizer)
        if start > total_epochs:
            raise ConfigError(f"{run_dir} is already trained for {start} epochs; ask for at least that many")
        history = _read_metrics(run_dir, up_to_epoch=start)
        stored = load_best(run_dir) if select else None
        if stored is not None:
            loss = next((line.get(HELDOUT_LOSS) for line in history if line["epoch"] == stored[0]), None)
            if loss is None:
                raise CheckpointError(f"{run_dir}: the checkpoint keeps the weights of epoch {stored[0]} but "
                                      f"{METRICS_FILE} has no held-out loss for that epoch")
            best = (stored[0], loss, stored[1])
    with _Reporter(show_progress, n_batches, total_epochs) as reporter:
        for epoch in range(start + 1, total_epochs + 1):
            began = time.perf_counter()
            last = epoch == total_epochs
            on_step = reporter.start_epoch(epoch)
            line = {"epoch": epoch, **train_epoch(model, optimizer, data, config=config, epoch=epoch, on_step=on_step,
                                                   total_epochs=total_epochs)}
            if val is not None and (epoch % val.every_epochs == 0 or last):
                line.update(_validate(model, val, block_len=config.block_len))
            if select and (_crossed(epoch, n_batches, config.select_every_steps) or last):
                line.update(heldout_scores(model, selection, scorer=scorer, block_len=config.block_len,
                                           top_fraction=config.loss.mil_top_fraction))
                if best is None or line[HELDOUT_LOSS] < best[1]:
                    best = (epoch, line[HELDOUT_LOSS], {k: v.detach().clone() for k, v in model.state_dict().items()})
            line["time_s"] = round(time.perf_counter() - began, 3)
            history.append(line)
            if not math.isfinite(line["loss"]):
                _write_metrics(run_dir, history)
                raise ConfigError(f"the loss became {line['loss']} in epoch {epoch}; lower --lr or check the features")
            # metrics, checkpoint and the progress line every _CHECKPOINT_STEPS steps: a small set makes
            # hundreds of few-step epochs
            if _crossed(epoch, n_batches, _CHECKPOINT_STEPS) or last:
                _write_metrics(run_dir, history)
                save_checkpoint(run_dir, epoch=epoch, model=model, optimizer=optimizer,
                                best=None if best is None else best[::2])
                reporter.end_epoch(line)
    if not history:
        raise CheckpointError(f"{run_dir} has no finished epoch to report")
    if best is not None:
        model.load_state_dict(best[2])
    save_run(run_dir, model, config=run_config)
    write_json(run_dir / SUMMARY_FILE, _summary(history, selected_epoch=None if best is None else best[0]))
    _plot_curves(history, run_dir / CURVES_FILE)
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
        raise ConfigError(f"the {len(set(videos))} requested training videos are all of one class; "
                          "weakly supervised training needs both normal and anomalous videos")
    return data


def _selection_set(data: FeatureSet, videos: Collection[str], *, trained: FeatureSet) -> FeatureSet:
    """The held-out videos early stopping watches: in the feature set, not trained on."""
    subset = _subset(data, videos, what="held-out")
    overlap = sorted(set(videos) & set(trained.videos))
    if overlap:
        raise ConfigError(f"{len(overlap)} held-out video(s) are also trained on, e.g. {overlap[0]}")
    return subset


def _need_scorer(selection: FeatureSet | None, scorer: VideoScorer | None) -> None:
    if selection is not None and scorer is None:
        raise ConfigError("early stopping scores the held-out videos and needs a video scorer "
                          "(vadpipe.postprocess.scores.score_video, which vadpipe.calibrated_training passes)")


def train(features: Path | str, *, out_dir: Path | str, config: TrainConfig = TrainConfig(),
          labels_csv: Path | str | None = None, crops: Sequence[int] | None = None,
          validation: ValidationSpec | None = None, show_progress: bool = False,
          videos: Collection[str] | None = None, heldout: Collection[str] | None = None,
          extra_config: Mapping[str, object] | None = None, scorer: VideoScorer | None = None) -> Path:
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
        scorer: the video scorer early stopping reads the held-out curves with (needed with
            ``heldout`` and ``config.early_stopping``; see `vadpipe.model.selection`).

    Returns:
        ``out_dir``, holding config.json, weights.safetensors, metrics.jsonl, summary.json,
        curves.png and checkpoint/.

    Example:
        >>> run = train("features/", out_dir="runs/r1", config=TrainConfig(epochs=2))  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    if (out_dir / CONFIG_FILE).exists() or (out_dir / CHECKPOINT_DIR).exists():
        raise CheckpointError(f"{out_dir} already holds a run; resume it (vadpipe train --resume {out_dir}) "
                              "or choose another --out")
    everything = data = open_training_set(features, labels_csv=labels_csv, crops=crops)
    if videos is not None:
        data = _restrict(data, videos)
    selection = _selection_set(everything, heldout, trained=data) if heldout and config.early_stopping else None
    if config.early_stopping and selection is None:
        warnings.warn("early stopping needs held-out videos and none were given: the last epoch's weights are "
                      "kept", DataWarning, stacklevel=2)
        config = replace(config, early_stopping=False)  # what the run really does, in its config.json
    _need_scorer(selection, scorer)
    val = _prepare_validation(validation, crops=crops) if validation is not None else None
    if val is not None and val.data.feature_dim != data.feature_dim:
        raise ConfigError(f"validation features are {val.data.feature_dim} wide, training features {data.feature_dim}")
    config = replace(config, model=replace(config.model, feature_dim=data.feature_dim))
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = {**_run_config(config, data, labels_csv=labels_csv, crops=crops, validation=validation),
                  **(extra_config or {})}
    if videos is not None:
        run_config["data"]["videos"] = data.videos
    run_config["selection"] = None if selection is None else {
        "videos": selection.videos, "metric": HELDOUT_LOSS, "every_steps": config.select_every_steps}
    write_json(out_dir / CONFIG_FILE, run_config)  # now, so that an interrupted run can be resumed
    return _fit(out_dir, run_config, config, data, val, resume_run=False, show_progress=show_progress,
                selection=selection, scorer=scorer)


def resume(run_dir: Path | str, *, epochs: int | None = None, show_progress: bool = False,
           scorer: VideoScorer | None = None) -> Path:
    """Continue a run from its last checkpoint, with its own settings and data (``epochs`` may grow,
    with the multistep schedule only; with early stopping the old last epoch keeps its evaluation).

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
            raise ConfigError(f"{run_dir} uses a cosine schedule, which ends where the run ends: more epochs would "
                              "restart its decay; train a new run with more --epochs or --min-steps")
        config = replace(config, epochs=epochs)
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):  # temp files of a killed writer
        if folder.is_dir():
            remove_stale_temps(folder)
    everything = data = open_training_set(recorded["path"], labels_csv=recorded["labels_csv"],
                                          crops=recorded["crops_requested"])
    if recorded.get("videos") is not None:
        data = _restrict(data, recorded["videos"])
    selection = None
    if (saved.selection or {}).get("videos"):
        selection = _selection_set(everything, saved.selection["videos"], trained=data)
    _need_scorer(selection, scorer)
    if (len(data.items), data.feature_dim) != (recorded["n_samples"], recorded["feature_dim"]):
        raise CheckpointError(f"the features in {recorded['path']} changed since the run started "
                              f"({recorded['n_samples']} samples of width {recorded['feature_dim']} then, "
                              f"{len(data.items)} of width {data.feature_dim} now)")
    val = None
    if saved.validation:
        spec = saved.validation
        spec = ValidationSpec(Path(spec["features"]), Path(spec["annotations"]), spec["every_epochs"])
        val = _prepare_validation(spec, crops=recorded["crops_requested"])
    run_config["training"] = config.to_dict()
    write_json(run_dir / CONFIG_FILE, run_config)
    return _fit(run_dir, run_config, config, data, val, resume_run=True, show_progress=show_progress,
                selection=selection, scorer=scorer)
