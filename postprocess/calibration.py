"""Operating points and score calibration chosen on held-out training videos (issue 7).

CSL-TAL's scores sit near 0.5 and never commit (the paper says so), so the paper's fixed
threshold (0.35 on the weighted T-CAM) draws intervals on most *normal* videos. This module
chooses, on videos held out from training, the two thresholds detection uses:

* a **video gate** on the classifier's video score: a video below it reports no interval;
* a **curve threshold** on the frame-rate weighted T-CAM: intervals are the runs above it.

Two ways to choose them (`choose_operating_point`):

* ``"false_alarms"`` (weak labels suffice): the curve threshold starts at the level that at
  most 1 % of the held-out normal *frames* exceed: it says where in
  a video something is unusual, and keeps the normal stretches of anomalous videos from
  breaking into spurious intervals. The gate, and the curve threshold only where the gate
  cannot, are then set so that at most ``target`` of the held-out normal *videos* get an
  interval while as many held-out anomalous videos as possible get one. The gate does most
  of the work because a video score averages over the whole video, whereas a curve's peak is
  an extreme value that a few held-out videos pin down poorly. Each threshold is put midway
  between the two held-out values it separates, not on one of them.
* ``"f1"`` (frame annotations of the held-out videos needed): both thresholds maximise the
  interval F1 at temporal IoU 0.3 on the held-out videos.

`fit_calibrator` maps a raw score to a probability (Platt scaling on the score's logit, or
isotonic regression), fitted with scikit-learn on the held-out videos and stored as plain
numbers, so applying it needs neither pickles nor scikit-learn. Everything here is a pure
function of held-out scores; training, scoring and writing the run folder live in
``vadpipe.calibrated_training`` and `vadpipe.run_calibration`, the held-out split in
`vadpipe.model.splits`, and what the held-out videos say about the result (counts, Brier
scores, the reliability diagram) in `vadpipe.postprocess.reliability`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from vadpipe.errors import ConfigError, DataError
from vadpipe.postprocess.decisions import VideoDetections, match_intervals, reported_intervals

__all__ = [
    "OPERATING_METHODS",
    "CALIBRATION_METHODS",
    "F1_IOU_THRESHOLD",
    "FRAME_FALSE_POSITIVE_RATE",
    "CalibrationWarning",
    "ScoreCalibrator",
    "fit_calibrator",
    "HeldoutVideo",
    "OperatingChoice",
    "choose_operating_point",
    "heldout_detections",
]

OPERATING_METHODS: tuple[str, ...] = ("false_alarms", "f1")
CALIBRATION_METHODS: tuple[str, ...] = ("platt", "isotonic")
F1_IOU_THRESHOLD = 0.3
FRAME_FALSE_POSITIVE_RATE = 0.01  # "false_alarms": share of normal frames the curve threshold lets through
_EPS = 1e-6  # scores are clipped to [eps, 1 - eps] before the logit
_F1_CURVE_LEVELS = 101  # curve thresholds tried in "f1" mode: quantiles of the held-out curves

OperatingMethod = Literal["false_alarms", "f1"]
CalibrationMethod = Literal["platt", "isotonic"]


class CalibrationWarning(UserWarning):
    """Held-out data too small or too uninformative for what was asked; the result says how."""


# --- score -> probability -------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreCalibrator:
    """A fitted map from a raw score in [0, 1] to a probability, stored as plain numbers.

    Attributes:
        method: ``"platt"``: ``sigmoid(slope * logit(s) + intercept)``; ``"isotonic"``: linear
            interpolation between ``knots_x`` -> ``knots_y``, constant beyond them;
            ``"constant"``: ``value`` for every score (too little or uninformative data).
        of: what the probability is the probability of, in words.
        n, n_positive: held-out examples it was fitted on, and how many were positive.
    """

    method: str
    of: str = ""
    slope: float = 1.0
    intercept: float = 0.0
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    value: float = 0.5
    n: int = 0
    n_positive: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("platt", "isotonic", "constant"):
            raise ValueError(f"method must be platt, isotonic or constant, got {self.method!r}")
        if self.method == "isotonic" and (len(self.knots_x) != len(self.knots_y) or not self.knots_x):
            raise ValueError("isotonic needs equally many knots_x and knots_y, at least one")
        if self.method == "constant" and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"value must lie in [0, 1], got {self.value}")

    def __call__(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Probabilities (float64, same shape) of raw ``scores``."""
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            z = self.slope * _logit(s) + self.intercept
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(s, self.knots_x, self.knots_y)
        return np.full(s.shape, self.value)

    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "platt": {"slope": self.slope, "intercept": self.intercept},
            "isotonic": {"knots_x": list(self.knots_x), "knots_y": list(self.knots_y)},
            "constant": {"value": self.value},
        }[self.method]
        return {"method": self.method, "of": self.of, **params, "n": self.n, "n_positive": self.n_positive}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreCalibrator:
        """Inverse of `to_dict`; raises ValueError (or TypeError) on a malformed dict."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a calibrator must be an object, got {data!r:.60}")
        known = {"method", "of", "slope", "intercept", "knots_x", "knots_y", "value", "n", "n_positive"}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("knots_x", "knots_y"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        for key in ("slope", "intercept", "value"):
            if key in values:
                values[key] = float(values[key])
                if not math.isfinite(values[key]):
                    raise ValueError(f"{key} must be finite, got {values[key]}")
        return cls(**values)


def _logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, _EPS, 1 - _EPS)
    return np.log(s) - np.log1p(-s)


def _constant(labels: np.ndarray, of: str) -> ScoreCalibrator:
    """Laplace's rule of succession: (positives + 1) / (n + 2), 0.5 with no data."""
    n, k = int(labels.size), int(labels.sum())
    return ScoreCalibrator("constant", of=of, value=(k + 1) / (n + 2), n=n, n_positive=k)


def fit_calibrator(
    scores: np.ndarray | Sequence[float],
    labels: np.ndarray | Sequence[int],
    *,
    method: CalibrationMethod = "platt",
    of: str = "",
) -> ScoreCalibrator:
    """Fit a score -> probability map on held-out (score, 0/1 label) pairs.

    ``"platt"`` is a logistic regression on ``logit(score)`` (temperature and bias) with
    Platt's smoothed targets ``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``, so that a handful of
    perfectly separated examples give a finite, not a 0/1, answer. ``"isotonic"`` is
    scikit-learn's monotone step fit; it needs hundreds of examples to be smooth.

    Single-class labels, no data, or (Platt) scores that fall as the label rises give a
    ``"constant"`` calibrator, the held-out positive rate by the rule of succession, with a
    `CalibrationWarning` saying why.

    Example:
        >>> cal = fit_calibrator([0.2, 0.3, 0.6, 0.7], [0, 0, 1, 1])
        >>> bool(cal(np.array([0.25]))[0] < 0.5 < cal(np.array([0.65]))[0])
        True
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(np.int64)
    if s.shape != y.shape:
        raise DataError(f"{s.size} scores but {y.size} labels")
    if s.size and (not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1):
        raise DataError("scores to calibrate must be finite and lie in [0, 1]")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if np.unique(y).size < 2:
        what = "no examples" if y.size == 0 else f"all {y.size} examples are {'positive' if y[0] else 'negative'}"
        warnings.warn(
            f"cannot fit a {method} calibration of {of or 'scores'}: {what}; using the rule-of-succession "
            "constant (positives + 1) / (n + 2) for every score",
            CalibrationWarning,
            stacklevel=2,
        )
        return _constant(y, of)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
        return ScoreCalibrator(
            "isotonic",
            of=of,
            knots_x=tuple(map(float, iso.X_thresholds_)),
            knots_y=tuple(map(float, iso.y_thresholds_)),
            n=int(y.size),
            n_positive=int(y.sum()),
        )

    from sklearn.linear_model import LogisticRegression

    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = _logit(s)[:, None]
    # Soft targets as weights: each example once as a positive (weight t), once as a negative (1 - t).
    model = LogisticRegression(C=1e4, max_iter=1000).fit(
        np.vstack([x, x]), np.r_[np.ones(y.size), np.zeros(y.size)], sample_weight=np.r_[target, 1 - target]
    )
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if slope <= 0:
        warnings.warn(
            f"{of or 'scores'}: on the held-out data higher scores are not more often positive "
            f"(fitted slope {slope:.3g}); using the held-out positive rate for every score",
            CalibrationWarning,
            stacklevel=2,
        )
        return _constant(y, of)
    return ScoreCalibrator("platt", of=of, slope=slope, intercept=intercept, n=int(y.size), n_positive=n_pos)


# --- choosing the operating point -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeldoutVideo:
    """One held-out video scored the way `vadpipe detect` scores videos.

    Attributes:
        name: the video name.
        label: 1 anomalous, 0 normal (the weak label).
        video_score: the classifier's video score (mean over phases and crops).
        curve: (N,) frame-rate weighted T-CAM (`interpolate_to_frames`, clipped).
        source_frames: (N,) source frame of every curve sample.
        truth: annotated anomalous ``[s, e)`` source-frame intervals, or None when only the
            weak label is known.
    """

    name: str
    label: int
    video_score: float
    curve: np.ndarray
    source_frames: np.ndarray
    truth: tuple[tuple[int, int], ...] | None = None

    @property
    def peak(self) -> float:
        return float(np.max(self.curve)) if self.curve.size else 0.0


@dataclass(frozen=True)
class OperatingChoice:
    """The chosen thresholds and how they were found.

    Attributes:
        threshold: curve threshold (intervals: runs of the weighted T-CAM strictly above it).
        video_threshold: video gate (a video with a lower video score reports nothing).
        method: ``"false_alarms"`` or ``"f1"``.
        target_false_alarm_rate: the constraint (``"false_alarms"``), else None.
        frame_level: ``"false_alarms"``: the level at most `FRAME_FALSE_POSITIVE_RATE` of the
            held-out normal frames exceed, where the curve threshold starts; None for ``"f1"``.
        notes: plain-language remarks (e.g. why the target could not be met).
    """

    threshold: float
    video_threshold: float
    method: str
    target_false_alarm_rate: float | None
    frame_level: float | None = None
    notes: tuple[str, ...] = field(default=())


def _gate_candidates(scores: np.ndarray) -> np.ndarray:
    """0 (no gate), the midpoints between consecutive distinct scores, and one above them all."""
    u = np.unique(scores)
    if u.size == 0:
        return np.zeros(1)
    top = min(1.0, u[-1] + (1.0 - u[-1]) / 2) if u[-1] < 1.0 else 1.0
    return np.concatenate([[0.0], (u[:-1] + u[1:]) / 2, [top]])


def _check_videos(videos: Sequence[HeldoutVideo]) -> None:
    if not videos:
        raise DataError("no held-out videos to choose an operating point on")
    for v in videos:
        if v.curve.shape != v.source_frames.shape or v.curve.ndim != 1:
            raise DataError(f"{v.name}: curve {v.curve.shape} and source_frames {v.source_frames.shape} differ")
    if not any(v.label == 0 for v in videos):
        raise DataError("no normal video among the held-out videos: a false-alarm rate cannot be measured")


def _choose_false_alarms(videos: Sequence[HeldoutVideo], target: float) -> OperatingChoice:
    labels = np.array([v.label for v in videos], dtype=bool)
    scores = np.array([v.video_score for v in videos], dtype=np.float64)
    peaks = np.array([v.peak for v in videos], dtype=np.float64)
    n_normal = int(np.sum(~labels))
    allowed = int(math.floor(target * n_normal + 1e-9))
    normal_frames = np.concatenate([v.curve for v in videos if not v.label])
    # At most FRAME_FALSE_POSITIVE_RATE of the normal frames lie strictly above the level.
    level = (
        float(np.quantile(normal_frames, 1.0 - FRAME_FALSE_POSITIVE_RATE, method="higher"))
        if normal_frames.size
        else 0.0
    )
    candidates = [level] + sorted({float(p) for p in peaks[~labels] if p > level})
    best: tuple | None = None
    for rank, curve_threshold in enumerate(candidates):
        flagged = peaks > curve_threshold
        gates = _gate_candidates(scores[flagged])
        passing = scores[None, flagged] >= gates[:, None]  # (gates, flagged videos)
        false_alarms = passing[:, ~labels[flagged]].sum(axis=1)
        found = passing[:, labels[flagged]].sum(axis=1)
        for g in np.flatnonzero(false_alarms <= allowed):
            key = (-int(found[g]), int(false_alarms[g]), rank, g)
            if best is None or key < best[0]:
                best = (key, curve_threshold, float(gates[g]))
    assert best is not None  # the gate above every score always meets the target
    (neg_found, n_alarms, rank, _), curve_threshold, gate = best
    if rank > 0:  # raised to silence a normal video: go midway to the next peak above it
        above = peaks[peaks > curve_threshold]
        if above.size:
            curve_threshold = (curve_threshold + float(above.min())) / 2
    notes = []
    n_anomalous = int(labels.sum())
    if -neg_found < n_anomalous:
        notes.append(f"within the target, {-neg_found} of {n_anomalous} held-out anomalous videos get an interval")
    if allowed == 0 and target > 0:
        notes.append(
            f"with {n_normal} held-out normal videos a target of {target:g} allows no false alarm at all; "
            "the measured rate only bounds the true one loosely (see false_alarm_rate_upper95)"
        )
    return OperatingChoice(curve_threshold, gate, "false_alarms", target, level, tuple(notes))


def _choose_f1(videos: Sequence[HeldoutVideo], iou_threshold: float) -> OperatingChoice:
    missing = [v.name for v in videos if v.label and v.truth is None]
    if missing:
        raise DataError(
            f"the f1 operating point needs frame annotations of every held-out anomalous video; "
            f"none for {', '.join(missing[:5])}"
        )
    labels = np.array([v.label for v in videos], dtype=bool)
    scores = np.array([v.video_score for v in videos], dtype=np.float64)
    n_truth = sum(len(v.truth or ()) for v in videos)
    frames = np.concatenate([v.curve for v in videos])
    levels = np.unique(np.quantile(frames, np.linspace(0.0, 1.0, _F1_CURVE_LEVELS), method="lower"))
    best: tuple | None = None
    for curve_threshold in levels:
        tp = np.zeros(len(videos))
        n_pred = np.zeros(len(videos))
        for i, v in enumerate(videos):
            intervals, interval_scores, _ = reported_intervals(
                v.curve, source_frames=v.source_frames, threshold=float(curve_threshold), video_score=1.0
            )
            n_pred[i] = len(intervals)
            tp[i] = len(match_intervals(intervals, interval_scores, v.truth or (), iou_threshold=iou_threshold))
        flagged = n_pred > 0
        gates = _gate_candidates(scores[flagged])
        passing = scores[None, :] >= gates[:, None]
        passing &= flagged[None, :]
        f1 = 2 * (passing @ tp) / np.maximum(passing @ n_pred + n_truth, 1)
        false_alarms = passing[:, ~labels].sum(axis=1)
        for g in range(gates.size):
            key = (-round(float(f1[g]), 12), int(false_alarms[g]), float(curve_threshold), g)
            if best is None or key < best[0]:
                best = (key, float(curve_threshold), float(gates[g]))
    assert best is not None
    return OperatingChoice(best[1], best[2], "f1", None, None, ())


def choose_operating_point(
    videos: Sequence[HeldoutVideo],
    *,
    method: OperatingMethod = "false_alarms",
    target_false_alarm_rate: float = 0.05,
    iou_threshold: float = F1_IOU_THRESHOLD,
) -> OperatingChoice:
    """Choose the video gate and the curve threshold on held-out videos (see the module doc).

    ``"false_alarms"``: at most ``target_false_alarm_rate`` of the held-out normal videos get an
    interval, and among the thresholds that achieve it, the most held-out anomalous videos get
    one (then the fewest normal ones). ``"f1"``: the best interval F1 at ``iou_threshold``
    (ties: fewer false alarms, then the lower thresholds).

    Example:
        >>> flat = lambda v, n: np.full(n, v)
        >>> held = [HeldoutVideo("n1", 0, 0.3, flat(0.3, 32), np.arange(32)),
        ...         HeldoutVideo("a1", 1, 0.8, np.r_[flat(0.3, 16), flat(0.7, 16)], np.arange(32))]
        >>> choice = choose_operating_point(held, target_false_alarm_rate=0.0)
        >>> choice.threshold, choice.video_threshold
        (0.3, 0.0)
    """
    _check_videos(videos)
    if method == "false_alarms":
        if not 0.0 <= target_false_alarm_rate < 1.0:
            raise ConfigError(f"target_false_alarm_rate must lie in [0, 1), got {target_false_alarm_rate}")
        return _choose_false_alarms(videos, target_false_alarm_rate)
    if method == "f1":
        return _choose_f1(videos, iou_threshold)
    raise ConfigError(f"operating point method must be one of {', '.join(OPERATING_METHODS)}, got {method!r}")


def heldout_detections(videos: Sequence[HeldoutVideo], choice: OperatingChoice) -> list[VideoDetections]:
    """What the chosen operating point reports on each held-out video (truth () if unknown)."""
    result = []
    for v in videos:
        intervals, scores, _ = reported_intervals(
            v.curve,
            source_frames=v.source_frames,
            threshold=choice.threshold,
            video_score=v.video_score,
            video_threshold=choice.video_threshold,
        )
        result.append(VideoDetections(v.label, tuple(intervals), tuple(scores), tuple(v.truth or ())))
    return result
