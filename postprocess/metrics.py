"""Table 1 metrics: four levels (video, segment, frame, proposal-frame) x (AUC, AP), two protocols.

Pure functions on arrays (method.md §6, §8.5, §8.6):

* ``csl``, the authors' protocol: every crop is a separate entry, scored on the subsampled rows
  only (`vadpipe.model.scoring.csl_rows`); the frame curve is the zoomed weighted T-CAM of
  those rows, lined up with the labels of their frames; pooled over all entries.
* ``standard``, the XD-Violence protocol (XDVioDet, RTFM, ...): every clip scored ("full"
  scoring), the crops' weighted T-CAMs averaged per video (`score_video`), each clip's score repeated ``clip_len`` times against the
  frame ground truth of the ``clip_len * T`` horizon.

AP is reported twice, labelled: ``ap`` is scikit-learn's ``average_precision_score`` (step-wise,
what the CSL-TAL code prints) and ``ap_trapezoid`` is ``auc(recall, precision)`` (what
XDVioDet and most papers print).

Beside the ranking metrics, `detection_metrics` scores the *decisions* at an operating point
(the intervals a user would be shown): the share of normal videos with any interval (false
alarms), interval precision / recall / F1 at temporal IoU thresholds with greedy one-to-one
matching, and the frame-level false-positive rate.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.ndimage
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from vadpipe.errors import ConfigError, DataError
from vadpipe.postprocess.proposals import find_proposals, interpolate_to_frames, paint_proposals

__all__ = [
    "IOU_THRESHOLDS",
    "LEVELS",
    "PROTOCOLS",
    "LEVEL_DEFINITIONS",
    "ProtocolName",
    "EntryPairs",
    "auc_ap",
    "csl_entry",
    "standard_entry",
    "pooled_metrics",
    "VideoDetections",
    "temporal_iou",
    "match_intervals",
    "detection_metrics",
    "reported_intervals",
]

ProtocolName = Literal["standard", "csl"]
PROTOCOLS: tuple[str, ...] = ("standard", "csl")
LEVELS: tuple[str, ...] = ("video", "segment", "frame", "proposal")
IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5)

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


# --- decisions at an operating point --------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoDetections:
    """What a user is shown for one evaluated entry, and the truth to compare it with.

    Attributes:
        label: 1 if the video is anomalous, else 0.
        intervals: reported half-open source-frame intervals ``[s, e)`` (empty when the video
            gate or the curve threshold suppressed them).
        scores: one score per interval (the order `match_intervals` uses).
        truth: annotated half-open source-frame intervals, clipped to the scored frames.
        frame_flags: (N,) bool, evaluated frames inside a reported interval (None: not scored
            at frame level).
        frame_labels: (N,) 0/1 labels of the same frames.
    """

    label: int
    intervals: tuple[tuple[int, int], ...]
    scores: tuple[float, ...]
    truth: tuple[tuple[int, int], ...]
    frame_flags: np.ndarray | None = None
    frame_labels: np.ndarray | None = None


def _as_intervals(intervals: Sequence[tuple[int, int]], name: str) -> np.ndarray:
    arr = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    if arr.size and np.any(arr[:, 1] <= arr[:, 0]):
        bad = arr[np.argmax(arr[:, 1] <= arr[:, 0])].tolist()
        raise DataError(f"{name}: every interval [s, e) needs s < e, got {bad}")
    return arr


def temporal_iou(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> np.ndarray:
    """Intersection over union of every pair of half-open intervals ``[s, e)``.

    Intervals that only touch (``[0, 5)`` and ``[5, 9)``) share no frame: IoU 0.

    Returns:
        (len(a), len(b)) float64.

    Example:
        >>> temporal_iou([(0, 10)], [(5, 15), (0, 10), (10, 20)]).round(3).tolist()
        [[0.333, 1.0, 0.0]]
    """
    x = _as_intervals(a, "intervals")
    y = _as_intervals(b, "intervals")
    inter = np.clip(np.minimum(x[:, None, 1], y[None, :, 1]) - np.maximum(x[:, None, 0], y[None, :, 0]), 0, None)
    union = (x[:, 1] - x[:, 0])[:, None] + (y[:, 1] - y[:, 0])[None, :] - inter
    return inter / union


def _check_iou_threshold(value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"iou_threshold must lie in (0, 1], got {value}")


def match_intervals(
    predicted: Sequence[tuple[int, int]],
    scores: Sequence[float],
    truth: Sequence[tuple[int, int]],
    *,
    iou_threshold: float,
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of predictions to ground truth, highest score first.

    Each prediction, in order of decreasing score (ties: earlier first), takes the still
    unmatched ground-truth interval it overlaps most, if that IoU is ``>= iou_threshold``
    (ties: the earlier one). A ground-truth interval is matched at most once, so a second
    prediction on the same event is a false positive (the ActivityNet / THUMOS rule).

    Returns:
        ``(prediction index, truth index)`` pairs, in matching order.

    Example:
        >>> match_intervals([(0, 10), (2, 10)], [0.5, 0.9], [(0, 10)], iou_threshold=0.5)
        [(1, 0)]
    """
    _check_iou_threshold(iou_threshold)
    if len(scores) != len(predicted):
        raise DataError(f"{len(predicted)} intervals but {len(scores)} scores")
    iou = temporal_iou(predicted, truth)
    free = np.ones(iou.shape[1], dtype=bool)
    pairs = []
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if not free.any():
            break
        candidates = np.where(free, iou[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            free[j] = False
            pairs.append((int(i), j))
    return pairs


def _undefined(what: str) -> float:
    warnings.warn(f"{what}; reported as NaN", UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def _rate(count: int, total: int, what: str) -> float:
    return count / total if total else _undefined(what)


def detection_metrics(
    videos: Sequence[VideoDetections], *, iou_thresholds: Sequence[float] = IOU_THRESHOLDS
) -> dict[str, Any]:
    """Score the reported intervals of a set of videos (an operating point's decisions).

    * ``false_alarm_rate``: share of normal videos with at least one interval;
      ``detection_rate``: share of anomalous videos with at least one interval.
    * ``intervals["iou_<t>"]``: interval precision = matched / reported, recall = matched /
      ground-truth intervals, F1 = 2 matched / (reported + ground truth), matching per video
      with `match_intervals`; counts pooled over videos.
    * ``frame``: false-positive rate (and true-positive rate) of the frames inside reported
      intervals, over the evaluated frames (None when no video carries frame flags).

    Undefined values (no normal videos, no reported intervals, ...) are NaN with an
    ``UndefinedMetricWarning`` naming them.
    """
    for t in iou_thresholds:
        _check_iou_threshold(t)
    normal = [v for v in videos if not v.label]
    anomalous = [v for v in videos if v.label]
    n_fa = sum(bool(v.intervals) for v in normal)
    n_found = sum(bool(v.intervals) for v in anomalous)
    result: dict[str, Any] = {
        "false_alarm_rate": _rate(n_fa, len(normal), "false_alarm_rate: no normal videos"),
        "normal_videos": len(normal),
        "normal_videos_flagged": n_fa,
        "detection_rate": _rate(n_found, len(anomalous), "detection_rate: no anomalous videos"),
        "anomalous_videos": len(anomalous),
        "anomalous_videos_flagged": n_found,
        "intervals": {},
    }
    n_pred = sum(len(v.intervals) for v in videos)
    n_true = sum(len(v.truth) for v in videos)
    for t in iou_thresholds:
        tp = sum(len(match_intervals(v.intervals, v.scores, v.truth, iou_threshold=t)) for v in videos)
        result["intervals"][f"iou_{t:g}"] = {
            "iou_threshold": t,
            "precision": _rate(tp, n_pred, f"interval precision at IoU {t:g}: no reported intervals"),
            "recall": _rate(tp, n_true, f"interval recall at IoU {t:g}: no ground-truth intervals"),
            "f1": _rate(2 * tp, n_pred + n_true, f"interval F1 at IoU {t:g}: no intervals at all"),
            "true_positives": tp,
            "reported": n_pred,
            "ground_truth": n_true,
        }
    scored = [v for v in videos if v.frame_flags is not None]
    if not scored:
        result["frame"] = None
        return result
    flags = np.concatenate([np.asarray(v.frame_flags, dtype=bool) for v in scored])
    labels = np.concatenate([np.asarray(v.frame_labels).astype(bool) for v in scored])
    if flags.shape != labels.shape:
        raise DataError(f"{flags.size} frame flags but {labels.size} frame labels")
    n_neg, n_pos = int(np.sum(~labels)), int(np.sum(labels))
    fp, tp_frames = int(np.sum(flags & ~labels)), int(np.sum(flags & labels))
    result["frame"] = {
        "fpr": _rate(fp, n_neg, "frame false-positive rate: no normal frames"),
        "tpr": _rate(tp_frames, n_pos, "frame true-positive rate: no anomalous frames"),
        "false_positive_frames": fp,
        "negative_frames": n_neg,
        "true_positive_frames": tp_frames,
        "positive_frames": n_pos,
    }
    return result


def reported_intervals(
    frame_curve: np.ndarray,
    *,
    source_frames: np.ndarray,
    threshold: float,
    video_score: float,
    video_threshold: float = 0.0,
) -> tuple[list[tuple[int, int]], list[float], np.ndarray]:
    """The intervals an operating point reports for one frame curve, in source frames.

    A video whose ``video_score`` is below ``video_threshold`` reports nothing; otherwise
    every run of the curve above ``threshold`` (`find_proposals`) becomes the source-frame
    span from its first to just after its last frame.

    Args:
        frame_curve: (N,) frame-level curve (`interpolate_to_frames` of the weighted T-CAM).
        source_frames: (N,) source frame index of every curve sample.

    Returns:
        ``(intervals, scores, flags)``: ``[s, e)`` pairs, their mean-curve scores, and the
        (N,) bool mask of curve samples inside a reported interval.
    """
    curve = np.asarray(frame_curve)
    frames = np.asarray(source_frames, dtype=np.int64)
    if frames.shape != curve.shape:
        raise DataError(f"frame curve {curve.shape} and source frames {frames.shape} differ")
    flags = np.zeros(curve.shape, dtype=bool)
    if video_score < video_threshold:
        return [], [], flags
    intervals, scores = [], []
    for p in find_proposals(curve, threshold=threshold):
        intervals.append((int(frames[p.start]), int(frames[p.end - 1]) + 1))
        scores.append(p.score)
        flags[p.start : p.end] = True
    return intervals, scores, flags


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
    """One crop under the authors' protocol (method.md §6 steps 3-5).

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
