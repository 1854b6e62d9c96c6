"""How much the held-out videos say about what was chosen on them: the false-alarm and detection
counts at the operating point with a bound on the true false-alarm rate, the Brier scores of the
raw and of out-of-fold calibrated probabilities (all stored with the operating point), and the
reliability diagram (``reliability.png`` in a calibrated run folder).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vadpipe.errors import DataError
from vadpipe.postprocess.calibration import (
    F1_IOU_THRESHOLD,
    CalibrationMethod,
    CalibrationWarning,
    HeldoutVideo,
    OperatingChoice,
    ScoreCalibrator,
    fit_calibrator,
    heldout_detections,
)
from vadpipe.postprocess.decisions import detection_metrics

__all__ = [
    "false_alarm_upper_bound",
    "detections_summary",
    "cross_validated",
    "calibration_quality",
    "plot_reliability",
]


def false_alarm_upper_bound(flagged: int, n_normal: int, *, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a false-alarm rate measured as flagged / n_normal.

    Says how little a small held-out set proves: 0 of 3 normal videos flagged still allows a true
    rate up to 63 % at 95 % confidence.

    Example:
        >>> round(false_alarm_upper_bound(0, 3), 3)
        0.632
    """
    from scipy.stats import beta

    if not 0 <= flagged <= n_normal:
        raise DataError(f"flagged must lie in [0, n_normal], got {flagged} of {n_normal}")
    if n_normal == 0 or flagged == n_normal:
        return 1.0
    return float(beta.ppf(confidence, flagged + 1, n_normal - flagged))


def detections_summary(videos: Sequence[HeldoutVideo], choice: OperatingChoice) -> dict[str, Any]:
    """Held-out false-alarm and detection counts at ``choice`` (and interval metrics with truth)."""
    detections = heldout_detections(videos, choice)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frame metrics are not computed here; NaN says "undefined"
        metrics = detection_metrics(detections, iou_thresholds=(F1_IOU_THRESHOLD, 0.5))
    summary = {
        k: metrics[k]
        for k in (
            "false_alarm_rate",
            "normal_videos",
            "normal_videos_flagged",
            "detection_rate",
            "anomalous_videos",
            "anomalous_videos_flagged",
        )
    }
    summary["false_alarm_rate_upper95"] = false_alarm_upper_bound(
        metrics["normal_videos_flagged"], metrics["normal_videos"]
    )
    if all(v.truth is not None or not v.label for v in videos):
        summary["intervals"] = metrics["intervals"]
    return summary


def cross_validated(scores: np.ndarray, labels: np.ndarray, method: CalibrationMethod) -> np.ndarray | None:
    """Out-of-fold calibrated probabilities (stratified, up to 5 folds); None if a class has < 2."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=2)
    if counts.min() < 2:
        return None
    out = np.empty(scores.size)
    folds = StratifiedKFold(n_splits=int(min(5, counts.min())), shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        for fit_idx, test_idx in folds.split(scores[:, None], labels):
            out[test_idx] = fit_calibrator(scores[fit_idx], labels[fit_idx], method=method)(scores[test_idx])
    return out


def calibration_quality(scores: np.ndarray, labels: np.ndarray, method: CalibrationMethod) -> dict[str, Any]:
    """Brier scores of the raw scores and of out-of-fold calibrated ones (None if not computable)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    cv = cross_validated(s, y, method) if y.size else None
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "brier_raw": float(np.mean((s - y) ** 2)) if y.size else None,
        "brier_calibrated_cross_validated": float(np.mean((cv - y) ** 2)) if cv is not None else None,
    }


def plot_reliability(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, ScoreCalibrator, CalibrationMethod]],
) -> Path:
    """A reliability diagram per panel: observed positive rate against the predicted probability,
    for the raw scores and the calibrated ones (out-of-fold where each class has 2+ examples,
    else in-sample, as the legend says). Marker area grows with the number of examples per bin.

    Args:
        panels: ``(title, raw scores, 0/1 labels, fitted calibrator, method)`` per panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vadpipe.extract.fileio import atomic_write_bytes

    fig = Figure(figsize=(5.2 * max(len(panels), 1), 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (title, raw, labels, calibrator, method) in zip(axes, panels):
        raw = np.asarray(raw, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
        if y.size:
            cv = cross_validated(raw, y, method) if calibrator.method != "constant" else None
            calibrated, how = (cv, "out-of-fold") if cv is not None else (calibrator(raw), "in-sample")
            for name, probs, colour in (
                ("raw score", raw, "tab:grey"),
                (f"calibrated ({calibrator.method}, {how})", calibrated, "tab:blue"),
            ):
                edges = np.linspace(0, 1, 11)
                bins = np.clip(np.digitize(probs, edges[1:-1]), 0, 9)
                used = np.unique(bins)
                mean_p = np.array([probs[bins == b].mean() for b in used])
                rate = np.array([y[bins == b].mean() for b in used])
                count = np.array([np.sum(bins == b) for b in used])
                brier = float(np.mean((probs - y) ** 2))
                ax.plot(mean_p, rate, color=colour, linewidth=1)
                ax.scatter(
                    mean_p,
                    rate,
                    s=20 + 180 * count / count.max(),
                    color=colour,
                    alpha=0.7,
                    label=f"{name}: Brier {brier:.3f}",
                )
        else:
            ax.text(0.5, 0.5, "no held-out examples", ha="center", va="center", transform=ax.transAxes)
        ax.set(
            xlim=(-0.02, 1.02),
            ylim=(-0.02, 1.02),
            xlabel="predicted probability (bin mean)",
            ylabel="observed share positive",
            title=f"{title}\n(n = {y.size}, {int(y.sum())} positive)",
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize="small", frameon=False)
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
