"""Table 1 metrics: four levels (video, segment, frame, proposal-frame) x (AUC, AP), two protocols.

Pure functions on arrays (postprocess/README.md §6, model/README.md §8):

* ``csl``, the authors' protocol: every crop is a separate entry, scored on the subsampled rows
  only (`vadpipe.model.scoring.csl_rows`); the frame curve is the zoomed weighted T-CAM of
  those rows, lined up with the labels of their frames; pooled over all entries.
* ``standard``, the XD-Violence protocol (XDVioDet, RTFM, ...): every clip scored ("full"
  scoring), the crops' weighted T-CAMs averaged per video (`score_video`), each clip's score repeated ``clip_len`` times against the
  frame ground truth of the ``clip_len * T`` horizon.

AP is reported twice, labelled: ``ap`` is scikit-learn's ``average_precision_score`` (step-wise,
what the CSL-TAL code prints) and ``ap_trapezoid`` is ``auc(recall, precision)`` (what
XDVioDet and most papers print).

Each entry also carries its *decisions* at an operating point (the intervals a user would be
shown), scored by `vadpipe.postprocess.decisions.detection_metrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.ndimage
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from vadpipe.errors import ConfigError, DataError
from vadpipe.postprocess.decisions import VideoDetections, detection_metrics, reported_intervals
from vadpipe.postprocess.proposals import find_proposals, interpolate_to_frames, paint_proposals

__all__ = [
    "LEVELS",
    "PROTOCOLS",
    "LEVEL_DEFINITIONS",
    "ProtocolName",
    "EntryPairs",
    "auc_ap",
    "csl_entry",
    "standard_entry",
    "pooled_metrics",
]

ProtocolName = Literal["standard", "csl"]
PROTOCOLS: tuple[str, ...] = ("standard", "csl")
LEVELS: tuple[str, ...] = ("video", "segment", "frame", "proposal")

LEVEL_DEFINITIONS: dict[str, dict[str, str]] = {
    "csl": {
        "video": "classifier probability of each crop's subsampled sequence vs the video label; one pair per crop",
        "segment": "weighted T-CAM at the subsampled clips vs clip labels (any frame anomalous)",
        "frame": "weighted T-CAM zoomed x clip_len (cubic, clipped 0.05/1) vs the labels of "
        "the subsampled clips' frames",
        "proposal": "painted proposals (runs of the frame curve above the threshold, each "
        "frame scored by its run's mean) vs the same frame labels",
    },
    "standard": {
        "video": "classifier probability averaged over phases and crops vs the video label; one pair per video",
        "segment": "crop-averaged weighted T-CAM of every clip vs clip labels",
        "frame": "crop-averaged weighted T-CAM of every clip repeated x clip_len vs frame "
        "labels of the clip_len*T horizon",
        "proposal": "painted proposals from the zoomed crop-averaged weighted T-CAM vs the same frame labels",
    },
}


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def auc_ap(scores: np.ndarray, labels: np.ndarray, *, level: str = "scores") -> dict[str, float]:
    """ROC-AUC and the two APs of one pool of (score, label) pairs.

    Single-class (or empty) labels make every metric undefined: a warning naming ``level`` is
    issued and the metrics are NaN, rather than scikit-learn's mix of errors and zeros.

    Returns:
        ``{"auc", "ap", "ap_trapezoid", "n", "n_positive"}``.

    Example:
        >>> auc_ap(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))["auc"]
        0.75
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise DataError(f"{level}: {s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{level}: scores hold NaN/inf values")
    classes = np.unique(y)
    if not np.all(np.isin(classes, (0, 1))):
        raise DataError(f"{level}: labels must be 0/1, got values {classes[:5].tolist()}")
    n, n_pos = int(y.size), int(np.sum(y == 1))
    if classes.size < 2:
        what = "no pairs" if n == 0 else f"labels contain only one class ({int(classes[0])})"
        warnings.warn(
            f"{level}: {what}; AUC and AP are undefined and reported as NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        nan = float("nan")
        return {"auc": nan, "ap": nan, "ap_trapezoid": nan, "n": n, "n_positive": n_pos}
    precision, recall, _ = precision_recall_curve(y, s)
    return {
        "auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "ap_trapezoid": float(auc(recall, precision)),
        "n": n,
        "n_positive": n_pos,
    }


def _source_frames(start_frames: np.ndarray, clip_len: int) -> np.ndarray:
    return (np.asarray(start_frames, dtype=np.int64)[:, None] + np.arange(clip_len)).ravel()


def _truth_intervals(
    truth: Sequence[tuple[int, int]] | None, frame_labels: np.ndarray, start_frames: np.ndarray
) -> tuple[tuple[int, int], ...]:
    """Ground truth clipped to the scored horizon; without ``truth``, the runs of labelled frames."""
    clip_len = frame_labels.shape[1]
    horizon = int(np.max(start_frames)) + clip_len if len(start_frames) else 0
    if truth is None:
        labels = np.zeros(horizon, dtype=bool)
        labels[_source_frames(start_frames, clip_len)] = np.asarray(frame_labels).ravel().astype(bool)
        runs, n = scipy.ndimage.label(labels)
        return tuple((int(r[0].start), int(r[0].stop)) for r in scipy.ndimage.find_objects(runs)[:n])
    clipped = ((max(int(s), 0), min(int(e), horizon)) for s, e in truth)
    return tuple((s, e) for s, e in clipped if s < e)


@dataclass(frozen=True, eq=False)
class EntryPairs:
    """The (score, label) pairs one evaluated entry contributes to each level.

    An entry is one crop of one video (``csl``) or one video with its crops averaged
    (``standard``). ``frame_scores``, ``proposal_scores`` and ``frame_labels`` line up index
    by index.
    """

    video_score: float
    video_label: int
    segment_scores: np.ndarray
    segment_labels: np.ndarray
    frame_scores: np.ndarray
    proposal_scores: np.ndarray
    frame_labels: np.ndarray
    detections: VideoDetections | None = None


def _decisions(
    frame_curve: np.ndarray,
    *,
    source_frames: np.ndarray,
    threshold: float,
    video_score: float,
    video_threshold: float,
    video_label: int,
    truth: tuple[tuple[int, int], ...],
    frame_labels: np.ndarray,
) -> tuple[np.ndarray, VideoDetections]:
    """The painted proposal curve of the reported intervals (zero when the video gate closes)
    and the entry's detections."""
    intervals, scores, flags = reported_intervals(
        frame_curve,
        source_frames=source_frames,
        threshold=threshold,
        video_score=video_score,
        video_threshold=video_threshold,
    )
    painted = (
        paint_proposals(find_proposals(frame_curve, threshold=threshold), len(frame_curve))
        if intervals
        else np.zeros(len(frame_curve))
    )
    return painted, VideoDetections(int(video_label), tuple(intervals), tuple(scores), truth, flags, frame_labels)


def csl_entry(
    wtcam: np.ndarray,
    rows: np.ndarray,
    video_score: float,
    video_label: int,
    frame_labels: np.ndarray,
    *,
    threshold: float = 0.35,
    low: float = 0.05,
    high: float = 1.0,
    start_frames: np.ndarray | None = None,
    truth: Sequence[tuple[int, int]] | None = None,
    video_threshold: float = 0.0,
) -> EntryPairs:
    """One crop under the authors' protocol (postprocess/README.md §6).

    Args:
        wtcam: (T',) weighted T-CAM of the subsampled rows (``mode="csl"`` scores).
        rows: (T',) the feature rows they belong to.
        video_score: the crop's classifier probability.
        video_label: 1 if the video is anomalous (listed in the annotations), else 0.
        frame_labels: (T, clip_len) labels of every clip of the video (`vadpipe.model.scoring.clip_frame_labels`).
        threshold, low, high: proposal threshold and interpolation clipping.
        start_frames: (T,) source frame of each clip (default: contiguous clips from frame 0).
        truth: annotated ``[s, e)`` source-frame intervals (default: the runs of labelled frames).
        video_threshold: crops whose ``video_score`` is below it report no interval.
    """
    psi = np.asarray(wtcam)
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(frame_labels)
    if psi.shape != rows.shape or psi.ndim != 1:
        raise DataError(f"wtcam {psi.shape} and rows {rows.shape} must be equal 1-D shapes")
    if rows.size and (rows.min() < 0 or rows.max() >= len(labels)):
        raise DataError(f"rows reach {int(rows.max())} but the video has {len(labels)} clips")
    kept = labels[rows]  # (T', clip_len): the frames the compressed curve lines up with
    clip_len = labels.shape[1]
    starts = clip_len * np.arange(len(labels)) if start_frames is None else np.asarray(start_frames)
    if starts.shape != (len(labels),):
        raise DataError(f"{starts.size} clip start frames for {len(labels)} clips")
    frame = interpolate_to_frames(psi, clip_len=clip_len, low=low, high=high)
    painted, detections = _decisions(
        frame,
        source_frames=_source_frames(starts[rows], clip_len),
        threshold=threshold,
        video_score=video_score,
        video_threshold=video_threshold,
        video_label=video_label,
        truth=_truth_intervals(truth, labels, starts),
        frame_labels=kept.ravel(),
    )
    return EntryPairs(
        video_score=float(video_score),
        video_label=int(video_label),
        segment_scores=psi,
        segment_labels=kept.any(axis=1).astype(np.uint8),
        frame_scores=frame,
        proposal_scores=painted,
        frame_labels=kept.ravel(),
        detections=detections,
    )


def standard_entry(
    wtcam: np.ndarray,
    video_score: float,
    video_label: int,
    frame_labels: np.ndarray,
    *,
    threshold: float = 0.35,
    low: float = 0.05,
    high: float = 1.0,
    start_frames: np.ndarray | None = None,
    truth: Sequence[tuple[int, int]] | None = None,
    video_threshold: float = 0.0,
) -> EntryPairs:
    """One video under the standard protocol: every clip, every frame.

    Args:
        wtcam: (T,) the video's full-rate curve, crops averaged (`score_video`'s ``wtcam``).
        video_score: the video's score (`score_video`'s, crops averaged).
        video_label: 1 if the video is anomalous (listed in the annotations), else 0.
        frame_labels: (T, clip_len) labels of every clip (`vadpipe.model.scoring.clip_frame_labels`).
        threshold, low, high: proposal threshold and interpolation clipping (proposal level).
        start_frames: (T,) source frame of each clip (default: contiguous clips from frame 0).
        truth: annotated ``[s, e)`` source-frame intervals (default: the runs of labelled frames).
        video_threshold: videos whose ``video_score`` is below it report no interval.
    """
    psi = np.asarray(wtcam)
    labels = np.asarray(frame_labels)
    if psi.ndim != 1 or psi.shape[0] != len(labels):
        raise DataError(f"wtcam must be (T,) with T = {len(labels)} clips like the labels, got {psi.shape}")
    clip_len = labels.shape[1]
    starts = clip_len * np.arange(len(labels)) if start_frames is None else np.asarray(start_frames)
    if starts.shape != (len(labels),):
        raise DataError(f"{starts.size} clip start frames for {len(labels)} clips")
    score = float(video_score)
    painted, detections = _decisions(
        interpolate_to_frames(psi, clip_len=clip_len, low=low, high=high),
        source_frames=_source_frames(starts, clip_len),
        threshold=threshold,
        video_score=score,
        video_threshold=video_threshold,
        video_label=video_label,
        truth=_truth_intervals(truth, labels, starts),
        frame_labels=labels.ravel(),
    )
    return EntryPairs(
        video_score=score,
        video_label=int(video_label),
        segment_scores=psi,
        segment_labels=labels.any(axis=1).astype(np.uint8),
        frame_scores=np.repeat(psi, clip_len),
        proposal_scores=painted,
        frame_labels=labels.ravel(),
        detections=detections,
    )


def pooled_metrics(entries: Sequence[EntryPairs], *, protocol: ProtocolName) -> dict:
    """Pool every entry's pairs per level and score them.

    Returns:
        ``{"protocol": ..., "video": {...}, "segment": {...}, "frame": {...},
        "proposal": {...}}``, each level as returned by `auc_ap`, and ``"detection"``: the
        decisions at the entries' operating point (`detection_metrics`; under ``csl`` every
        crop counts as a video, as at the video level).
    """
    _check_protocol(protocol)

    def cat(name: str) -> np.ndarray:
        parts = [getattr(e, name) for e in entries]
        return np.concatenate(parts) if parts else np.zeros(0)

    result: dict = {"protocol": protocol}
    result["video"] = auc_ap(
        np.array([e.video_score for e in entries]),
        np.array([e.video_label for e in entries], dtype=np.int64),
        level="video",
    )
    result["segment"] = auc_ap(cat("segment_scores"), cat("segment_labels"), level="segment")
    frame_labels = cat("frame_labels")
    result["frame"] = auc_ap(cat("frame_scores"), frame_labels, level="frame")
    result["proposal"] = auc_ap(cat("proposal_scores"), frame_labels, level="proposal")
    if entries and all(e.detections is not None for e in entries):
        result["detection"] = detection_metrics([e.detections for e in entries])
    return result
