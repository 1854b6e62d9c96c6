"""Early stopping on held-out training videos: what it watches (video labels only) and the hook
that keeps the best weights.

The curve it reads is the product's one scoring function, `vadpipe.model.scoring.score_video`,
so that the weights are chosen on exactly the curve ``detect`` thresholds.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vadpipe.errors import CheckpointError

from .data import FeatureItem, FeatureSet, load_item
from .history import HELDOUT_LOSS, METRICS_FILE
from .losses import top_k_mean
from .net import CSLTAL
from .schedules import crossed
from .scoring import score_video

__all__ = ["heldout_scores", "EarlyStopping"]


def _bce(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def heldout_scores(model: CSLTAL, data: FeatureSet, *, block_len: int, top_fraction: float) -> dict[str, float | None]:
    """What early stopping watches (held-out training videos have no frame labels).

    Every video is scored by `score_video` (full rate, as detect does). Per video: the *peak*, the
    mean of the top ``top_fraction`` of its curve, and its video score. ``heldout_loss`` is the
    class-balanced mean of BCE(peak, y) and BCE(video score, y): low when the curve rises in
    anomalous videos and stays low in normal ones, i.e. what detect's intervals and false alarms
    depend on. ``heldout_peak_auc`` is the AUC of the peaks (None with one class).
    """
    by_video: dict[str, list[FeatureItem]] = defaultdict(list)
    for item in data.items:
        by_video[item.video].append(item)
    names = sorted(by_video)
    model.eval()
    peaks, scores = [], []
    for name in names:
        scored = score_video(
            model, [load_item(item, feature_dim=data.feature_dim) for item in by_video[name]], block_len=block_len
        )
        curve = torch.from_numpy(np.ascontiguousarray(scored.wtcam, dtype=np.float32))[None]
        peaks.append(float(top_k_mean(curve, torch.ones_like(curve, dtype=torch.bool), fraction=top_fraction)[0]))
        scores.append(float(scored.video_score))
    model.train()
    y = np.array([int(by_video[n][0].label) for n in names], dtype=np.float64)
    peak, score = np.array(peaks), np.array(scores)
    per_video = 0.5 * (_bce(peak, y) + _bce(score, y))
    loss = float(np.mean([per_video[y == c].mean() for c in (0, 1) if (y == c).any()]))
    auc = None
    if 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, peak))
    return {HELDOUT_LOSS: loss, "heldout_peak_auc": auc}


class EarlyStopping:
    """Epoch hook: scores the held-out videos after each epoch that passes a multiple of
    ``every_steps`` optimizer steps (and after the last), and keeps the weights with the lowest
    held-out loss."""

    def __init__(
        self,
        data: FeatureSet,
        *,
        block_len: int,
        top_fraction: float,
        every_steps: int,
        n_batches: int,
    ) -> None:
        self.data, self.block_len, self.top_fraction = data, block_len, top_fraction
        self.every_steps, self.n_batches = every_steps, n_batches
        self.best: tuple[int, float, dict[str, torch.Tensor]] | None = None  # epoch, held-out loss, weights

    def __call__(self, model: CSLTAL, *, epoch: int, last: bool) -> dict[str, float | None]:
        if not (crossed(epoch, self.n_batches, self.every_steps) or last):
            return {}
        line = heldout_scores(model, self.data, block_len=self.block_len, top_fraction=self.top_fraction)
        if self.best is None or line[HELDOUT_LOSS] < self.best[1]:
            self.best = (epoch, line[HELDOUT_LOSS], {k: v.detach().clone() for k, v in model.state_dict().items()})
        return line

    def restore(self, stored: tuple[int, dict[str, torch.Tensor]] | None, history: list[dict], *, where: Path) -> None:
        """Take back the weights a checkpoint kept (``stored``: epoch, state dict) with their loss from ``history``."""
        if stored is None:
            return
        loss = next((line.get(HELDOUT_LOSS) for line in history if line["epoch"] == stored[0]), None)
        if loss is None:
            raise CheckpointError(
                f"{where}: the checkpoint keeps the weights of epoch {stored[0]} but "
                f"{METRICS_FILE} has no held-out loss for that epoch"
            )
        self.best = (stored[0], loss, stored[1])

    @property
    def kept(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(epoch, weights) of the best evaluation so far, as a checkpoint stores them."""
        return None if self.best is None else (self.best[0], self.best[2])
