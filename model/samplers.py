"""Training batches: which samples go together in each step of an epoch, and how their views are
padded into one tensor (model/README.md §2, §7). All randomness comes from the generator the caller seeds."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .augment import view_indices
from .data import FeatureSet, load_item

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["Batch", "make_batch", "batches_per_epoch", "epoch_batches", "iterate_batches"]


@dataclass(frozen=True)
class Batch:
    """One training batch, its views not copied out of their rows.

    rows: (U, F) float32, every feature row some view of the batch uses, once (the two random
    views of a sample share about a third of their rows); source: (B*K, T) long, view row r's
    step t is ``rows[source[r, t]]`` (0 on padding); the views of sample b are rows b*K .. b*K+K-1;
    mask: (B, T) bool, valid steps of sample b (shared by its views); labels: (B,) float32.
    """

    rows: Tensor
    source: Tensor
    mask: Tensor
    labels: Tensor

    @property
    def n_views(self) -> int:
        return self.source.shape[0] // self.labels.shape[0]

    @property
    def x(self) -> Tensor:
        """(B*K, T, F) the views right-padded with zeros, the layout `CSLTAL.forward` takes."""
        valid = self.mask.repeat_interleave(self.n_views, dim=0)
        return self.rows[self.source] * valid.unsqueeze(2).to(self.rows.dtype)


def make_batch(arrays: Sequence[np.ndarray], views: Sequence[np.ndarray], labels: Sequence[int]) -> Batch:
    """Collect the views of several samples into one Batch, right-padded.

    Args:
        arrays: per sample a (T_b, F) float32 array.
        views: per sample a (K, T'_b) index array into its rows (see :func:`view_indices`).
        labels: per sample 0 (normal) or 1 (anomalous).
    """
    n_views = views[0].shape[0]
    lengths = [v.shape[1] for v in views]
    steps = max(lengths)
    used = [np.unique(v, return_inverse=True) for v in views]
    rows = np.empty((sum(u.size for u, _ in used), arrays[0].shape[1]), dtype=np.float32)
    source = np.zeros((len(arrays) * n_views, steps), dtype=np.int64)
    mask = np.zeros((len(arrays), steps), dtype=bool)
    start = 0
    for b, (array, (distinct, inverse)) in enumerate(zip(arrays, used)):
        np.take(array, distinct, axis=0, out=rows[start : start + distinct.size])
        source[b * n_views : (b + 1) * n_views, : lengths[b]] = start + inverse.reshape(n_views, lengths[b])
        mask[b, : lengths[b]] = True
        start += distinct.size
    return Batch(
        torch.from_numpy(rows),
        torch.from_numpy(source),
        torch.from_numpy(mask),
        torch.tensor(labels, dtype=torch.float32),
    )


def _class_counts(labels: np.ndarray) -> tuple[int, int]:
    return int((labels == 0).sum()), int((labels == 1).sum())


def batches_per_epoch(labels: Sequence[int], *, batch_size: int, balanced: bool) -> int:
    """Optimizer steps in one epoch over samples with these labels."""
    labels = np.asarray(labels)
    n_normal, n_anomalous = _class_counts(labels)
    if balanced and n_normal and n_anomalous:
        return math.ceil(2 * max(n_normal, n_anomalous) / batch_size)
    return math.ceil(len(labels) / batch_size)


def epoch_batches(
    labels: Sequence[int], *, batch_size: int, balanced: bool, rng: np.random.Generator
) -> list[np.ndarray]:
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


def iterate_batches(
    data: FeatureSet, *, config: TrainConfig, epoch: int, features: Sequence[np.ndarray] | None = None
) -> Iterator[Batch]:
    """The batches of one epoch (see :func:`epoch_batches`), with fresh random views.

    ``features``: every item's array in ``data.items`` order (see :func:`vadpipe.model.data.preload`);
    None reads each sample's file when its batch is made.
    """
    rng = np.random.default_rng([config.seed, epoch])
    labels = [item.label for item in data.items]
    for indices in epoch_batches(labels, batch_size=config.batch_size, balanced=config.balanced, rng=rng):
        items = [data.items[i] for i in indices]
        arrays = (
            [features[i] for i in indices]
            if features is not None
            else [load_item(item, feature_dim=data.feature_dim) for item in items]
        )
        views = [
            view_indices(a.shape[0], n_views=config.n_views, block_len=config.block_len, rng=rng, mode=config.views)
            for a in arrays
        ]
        yield make_batch(arrays, views, [item.label for item in items])
