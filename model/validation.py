"""Validation during training: held-out features with frame annotations, scored every few epochs.

A quick check, not the evaluation: the video AUC (one score per crop file) and a frame AUC of the
authors' subsampled rows. The full Table 1 protocols live in ``vadpipe evaluate``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import chunk_start_indices
from .data import DataWarning, FeatureSet, clip_geometry, load_item, scan_features
from .labels import labels_from_annotations, parse_annotations
from .net import CSLTAL
from .samplers import make_batch
from .scoring import clip_frame_labels

__all__ = ["ValidationSpec", "Validator"]

_VAL_BATCH = 32


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


def _auc(labels: np.ndarray, scores: np.ndarray, what: str) -> float | None:
    from sklearn.metrics import roc_auc_score

    if labels.min() == labels.max():
        warnings.warn(f"validation {what} AUC is undefined: every label is {int(labels[0])}", DataWarning, stacklevel=3)
        return None
    return float(roc_auc_score(labels, scores))


class Validator:
    """Epoch hook: the validation AUCs after every ``spec.every_epochs``-th epoch and the last."""

    def __init__(self, spec: ValidationSpec, *, crops: Sequence[int] | None, block_len: int) -> None:
        annotations = parse_annotations(spec.annotations)
        self.data: FeatureSet = labels_from_annotations(
            scan_features(spec.features, split="test", crops=crops), annotations
        )
        self.every_epochs, self.block_len = spec.every_epochs, block_len
        self.frame_labels: dict[str, np.ndarray] = {}  # video -> (n_clips, clip_len) 0/1, its clips' frames
        for item in self.data.items:
            if item.video in self.frame_labels:
                continue
            length, starts = clip_geometry(item)
            intervals = next((annotations[n] for n in item.names() if n in annotations), [])
            self.frame_labels[item.video] = clip_frame_labels(intervals, start_frames=starts, clip_len=length)

    def __call__(self, model: CSLTAL, *, epoch: int, last: bool) -> dict[str, float | None]:
        if epoch % self.every_epochs and not last:
            return {}
        return self.scores(model)

    @torch.no_grad()
    def scores(self, model: CSLTAL) -> dict[str, float | None]:
        """Video AUC (one score per crop file) and a simple frame AUC: the weighted T-CAM of every
        L-th clip (the authors' test subsampling), repeated over that clip's frames, against the
        annotated frames."""
        model.eval()
        video_scores, video_labels, frame_scores, frame_labels = [], [], [], []
        items = self.data.items
        for start in range(0, len(items), _VAL_BATCH):
            chunk = items[start : start + _VAL_BATCH]
            keep = [chunk_start_indices(item.n_steps, block_len=self.block_len) for item in chunk]
            arrays = [load_item(item, feature_dim=self.data.feature_dim) for item in chunk]
            batch = make_batch(arrays, [k[None, :] for k in keep], [item.label for item in chunk])
            out = model(batch.x, batch.mask)
            wtcam = out.weighted_tcam.numpy()
            for row, (item, idx) in enumerate(zip(chunk, keep)):
                labels = self.frame_labels[item.video][idx]  # (T', clip_len)
                frame_labels.append(labels.ravel())
                frame_scores.append(np.repeat(wtcam[row, : idx.size], labels.shape[1]))
            video_scores.extend(out.video_score.tolist())
            video_labels.extend(item.label for item in chunk)
        return {
            "val_video_auc": _auc(np.asarray(video_labels), np.asarray(video_scores), "video"),
            "val_frame_auc": _auc(np.concatenate(frame_labels), np.concatenate(frame_scores), "frame"),
        }
