"""How far a clip's I3D feature lies from the training footage: a shrunk-covariance Mahalanobis
distance, and the threshold beyond which a clip is "outside the training footage".

A CSL-TAL model's scores, its operating point and its calibrated probabilities were all
measured on footage like its training set; on another camera they still come out as numbers
between 0 and 1, with nothing to show that they mean nothing. This module stores, next to a
run's weights, what is needed to tell: the mean and a whitening matrix of the training clips'
features (Ledoit-Wolf shrunk covariance, since a few hundred clips cannot estimate a 1024 x 1024
covariance), and a clip threshold measured on videos the fit did not see.

The threshold is the ``quantile`` (0.99) of the clip distances of the run's **held-out**
training videos (the quarter `vadpipe.calibrated_training` keeps back). A run trained on every
video has none; its threshold is then **cross-fitted**: the videos are split into up to five
folds, each fold's clips are measured against a fit on the other folds, and the quantile is
taken over all these out-of-fold distances (the final fit uses every video). A distance
measured on the fitted clips themselves would be too small to set a threshold with: in 1024
dimensions every sample lies close to a fit that saw it.

A video is outside the training footage when more than ``max_share`` of its clips are beyond
the threshold (see `vadpipe.postprocess.ood`).

Stored as ``ood.safetensors`` in the run folder: tensors ``mean`` (F,) and ``whitening``
(F, F), float32, and the settings and provenance as JSON in the metadata. No pickle. Runs
trained before this file existed have none; `load_distance` returns None for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vadpipe._version import __version__
from vadpipe.errors import CheckpointError, ConfigError, DataError
from vadpipe.extract.fileio import atomic_write_bytes

from .data import FeatureSet, load_item
from .labels import open_training_set
from .run import read_run_config

__all__ = [
    "OOD_FILE",
    "OOD_SCHEMA_VERSION",
    "CLIP_QUANTILE",
    "MAX_SHARE",
    "CROSS_FIT_FOLDS",
    "MAX_FIT_CLIPS",
    "FeatureDistance",
    "fit_whitening",
    "fit_distance",
    "fit_run_distance",
    "save_distance",
    "load_distance",
]

OOD_FILE = "ood.safetensors"
OOD_SCHEMA_VERSION = 1
CLIP_QUANTILE = 0.99
MAX_SHARE = 0.5
CROSS_FIT_FOLDS = 5
MAX_FIT_CLIPS = 20_000  # plenty for a 1024-d covariance; keeps the fit to seconds on XD-Violence
_METHOD = "mahalanobis-ledoit-wolf"

VideoCrops = Sequence[np.ndarray]  # one video: one (T, F) feature array per crop, equal T


@dataclass(frozen=True, eq=False)
class FeatureDistance:
    """A fitted distance from the training clips and the threshold of "outside the training footage".

    Attributes:
        mean: (F,) mean training feature.
        whitening: (F, F) matrix W with ``(x - mean) @ W`` white under the shrunk covariance, so
            that the Euclidean norm of it is the Mahalanobis distance.
        threshold: clip distance beyond which a clip is outside the training footage.
        quantile: the share of threshold-setting clips at or below ``threshold``.
        max_share: a video is outside when more than this share of its clips are beyond.
        threshold_from: ``"heldout"`` (held-out training videos) or ``"cross_fit"``.
        shrinkage: the Ledoit-Wolf shrinkage (0: sample covariance, 1: scaled identity).
        fit_videos, fit_clips: what the mean and covariance were fitted on.
        threshold_videos, threshold_clips: what the threshold was measured on.
        threshold_video_shares: per threshold video, the share of its clips beyond the threshold.
    """

    mean: np.ndarray
    whitening: np.ndarray
    threshold: float
    quantile: float = CLIP_QUANTILE
    max_share: float = MAX_SHARE
    threshold_from: str = "heldout"
    shrinkage: float = 0.0
    fit_videos: int = 0
    fit_clips: int = 0
    threshold_videos: int = 0
    threshold_clips: int = 0
    threshold_video_shares: Mapping[str, float] = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(T,) Mahalanobis distance of each row of ``features`` (T, F)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise DataError(
                f"features of shape {x.shape} do not fit a distance fitted on {self.feature_dim}-d features"
            )
        return np.linalg.norm((x - self.mean) @ self.whitening, axis=1)

    def clip_distances(self, crops: VideoCrops) -> np.ndarray:
        """(T,) distance of each clip of one video: the mean over its crops' distances."""
        if not crops:
            raise DataError("a video needs at least one crop's features to be measured")
        return np.mean([self.distances(c) for c in crops], axis=0)

    def summary(self) -> dict[str, Any]:
        """The JSON-able settings and provenance (everything but the tensors)."""
        return {
            "method": _METHOD,
            "feature_dim": self.feature_dim,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "max_share": self.max_share,
            "threshold_from": self.threshold_from,
            "shrinkage": self.shrinkage,
            "fit_videos": self.fit_videos,
            "fit_clips": self.fit_clips,
            "threshold_videos": self.threshold_videos,
            "threshold_clips": self.threshold_clips,
            "threshold_video_shares": dict(self.threshold_video_shares),
        }


def fit_whitening(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, whitening, shrinkage) of the Ledoit-Wolf shrunk covariance of ``features`` (N, F)."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"need at least 2 clips to fit a feature distribution, got an array of shape {x.shape}")
    lw = LedoitWolf().fit(x)
    values, vectors = np.linalg.eigh(lw.covariance_)
    floor = max(float(values.max()) * 1e-9, 1e-12)  # a constant feature has zero variance even shrunk
    whitening = vectors / np.sqrt(np.maximum(values, floor))
    return lw.location_, whitening, float(lw.shrinkage_)


def _rows(videos: Sequence[VideoCrops]) -> np.ndarray:
    """Every crop's clips as fit samples, at most `MAX_FIT_CLIPS` of them (a seeded subsample)."""
    rows = np.concatenate([np.asarray(c, dtype=np.float64) for crops in videos for c in crops], axis=0)
    if len(rows) > MAX_FIT_CLIPS:
        rows = rows[np.sort(np.random.default_rng(0).choice(len(rows), MAX_FIT_CLIPS, replace=False))]
    return rows


def _quantile(values: np.ndarray, quantile: float) -> float:
    return float(np.quantile(values, quantile, method="linear"))


def fit_distance(
    train: Mapping[str, VideoCrops],
    heldout: Mapping[str, VideoCrops] | None = None,
    *,
    quantile: float = CLIP_QUANTILE,
    max_share: float = MAX_SHARE,
    folds: int = CROSS_FIT_FOLDS,
) -> FeatureDistance:
    """Fit the distance on the clips of ``train`` and set its threshold.

    Args:
        train: video name -> its crops' (T, F) features; every crop's clips are fit samples.
        heldout: videos not in ``train``; the threshold is the ``quantile`` of their clip
            distances. None or empty: cross-fit the threshold on ``train`` in ``folds``
            folds of whole videos (needs >= 2 videos).
        quantile: share of threshold-setting clips that lie within the threshold.
        max_share: the per-video rule's share (stored; `vadpipe.postprocess.ood` applies it).
    """
    if not 0.5 <= quantile < 1.0:
        raise ConfigError(f"quantile must lie in [0.5, 1), got {quantile}")
    if not 0.0 <= max_share < 1.0:
        raise ConfigError(f"max_share must lie in [0, 1), got {max_share}")
    if not train:
        raise DataError("no training videos to fit the feature distribution on")
    mean, whitening, shrinkage = fit_whitening(_rows(list(train.values())))
    fitted = FeatureDistance(mean=mean, whitening=whitening, threshold=np.inf, shrinkage=shrinkage)
    if heldout:
        measured = {name: fitted.clip_distances(crops) for name, crops in heldout.items()}
        source = "heldout"
    else:
        names = sorted(train)
        if len(names) < 2:
            raise DataError("cross-fitting the outside-footage threshold needs at least 2 training videos")
        order = np.random.default_rng(0).permutation(len(names))
        n_folds = min(folds, len(names))
        measured = {}
        for k in range(n_folds):
            out = {names[i] for i in order[k::n_folds]}
            m, w, _ = fit_whitening(_rows([train[n] for n in names if n not in out]))
            fold = FeatureDistance(mean=m, whitening=w, threshold=np.inf)
            measured.update({n: fold.clip_distances(train[n]) for n in out})
        source = "cross_fit"
    pooled = np.concatenate(list(measured.values()))
    threshold = _quantile(pooled, quantile)
    shares = {name: float(np.mean(d > threshold)) for name, d in sorted(measured.items())}
    return FeatureDistance(
        mean=mean,
        whitening=whitening,
        threshold=threshold,
        quantile=quantile,
        max_share=max_share,
        threshold_from=source,
        shrinkage=shrinkage,
        fit_videos=len(train),
        fit_clips=sum(len(crops[0]) for crops in train.values()),
        threshold_videos=len(measured),
        threshold_clips=int(pooled.size),
        threshold_video_shares=shares,
    )


def _video_crops(data: FeatureSet, videos: Sequence[str]) -> dict[str, list[np.ndarray]]:
    wanted = set(videos)
    out: dict[str, list[np.ndarray]] = {}
    for item in data.items:  # sorted by (video, crop)
        if item.video in wanted:
            out.setdefault(item.video, []).append(load_item(item, feature_dim=data.feature_dim))
    return out


def fit_run_distance(run_dir: Path | str, *, data: FeatureSet | None = None) -> FeatureDistance:
    """Fit and store (``run_dir/ood.safetensors``) the distance of a trained run.

    Fitted on the videos the run trained on (config ``data.videos``, else every video of its
    feature set); the threshold comes from the run's held-out videos (config
    ``calibration.heldout_videos``) when it has any, else it is cross-fitted.

    Args:
        data: the run's opened training feature set (None: re-open it from the config).
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    recorded = config.data or {}
    if data is None:
        try:
            data = open_training_set(
                recorded["path"], labels_csv=recorded.get("labels_csv"), crops=recorded.get("crops_requested")
            )
        except KeyError:
            raise CheckpointError(f"{run_dir}/config.json does not record its training features") from None
    heldout_names = list((config.calibration or {}).get("heldout_videos") or ())
    trained = list(recorded.get("videos") or sorted(set(data.videos) - set(heldout_names)))
    distance = fit_distance(_video_crops(data, trained), _video_crops(data, heldout_names))
    save_distance(run_dir / OOD_FILE, distance)
    return distance


def save_distance(path: Path | str, distance: FeatureDistance) -> Path:
    """Write ``distance`` as safetensors (atomically); settings and provenance in the metadata."""
    tensors = {
        "mean": torch.from_numpy(np.ascontiguousarray(distance.mean, dtype=np.float32)),
        "whitening": torch.from_numpy(np.ascontiguousarray(distance.whitening, dtype=np.float32)),
    }
    metadata = {
        "schema_version": str(OOD_SCHEMA_VERSION),
        "vadpipe_version": __version__,
        "ood": json.dumps(distance.summary()),
    }
    atomic_write_bytes(Path(path), save_safetensors(tensors, metadata=metadata))
    return Path(path)


def load_distance(run_dir: Path | str) -> FeatureDistance | None:
    """The run's stored distance, or None for a run trained before vadpipe stored one.

    Raises:
        CheckpointError: the file exists but is unreadable, foreign or inconsistent.
    """
    path = Path(run_dir) / OOD_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
        if metadata.get("schema_version") != str(OOD_SCHEMA_VERSION):
            raise ValueError(
                f"schema_version {metadata.get('schema_version')!r}, this vadpipe reads {OOD_SCHEMA_VERSION}"
            )
        info = json.loads(metadata["ood"])
        mean = tensors["mean"].double().numpy()
        whitening = tensors["whitening"].double().numpy()
        if mean.ndim != 1 or whitening.shape != (mean.size, mean.size) or info["feature_dim"] != mean.size:
            raise ValueError(
                f"mean {tuple(mean.shape)} and whitening {tuple(whitening.shape)} do not fit "
                f"feature_dim {info['feature_dim']}"
            )
        return FeatureDistance(
            mean=mean,
            whitening=whitening,
            threshold=float(info["threshold"]),
            quantile=float(info["quantile"]),
            max_share=float(info["max_share"]),
            threshold_from=str(info["threshold_from"]),
            shrinkage=float(info["shrinkage"]),
            fit_videos=int(info["fit_videos"]),
            fit_clips=int(info["fit_clips"]),
            threshold_videos=int(info["threshold_videos"]),
            threshold_clips=int(info["threshold_clips"]),
            threshold_video_shares=dict(info.get("threshold_video_shares") or {}),
        )
    except (SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a usable vadpipe outside-footage file: {exc}") from None
