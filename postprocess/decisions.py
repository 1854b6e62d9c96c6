"""The decisions at an operating point, scored: the intervals a user is shown against the truth.

`detection_metrics` gives the share of normal videos with any interval (false alarms), interval
precision / recall / F1 at temporal IoU thresholds with greedy one-to-one matching
(`match_intervals`), and the frame-level false-positive rate. Kept apart from the ranking
metrics of `vadpipe.postprocess.metrics` because calibration chooses operating points with
these alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from vadpipe.errors import ConfigError, DataError
from vadpipe.postprocess.proposals import find_proposals

__all__ = [
    "IOU_THRESHOLDS",
    "VideoDetections",
    "temporal_iou",
    "match_intervals",
    "detection_metrics",
    "reported_intervals",
]

IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5)


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
