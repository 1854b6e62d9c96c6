"""One picture per video, like the paper's Fig. 2: score curves over time, the threshold, the
detected intervals and, when known, the ground truth.

Drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot global state, no
display needed, safe to call from several threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vadpipe.errors import DataError
from vadpipe.extract.fileio import atomic_writer
from vadpipe.postprocess.intervals import Interval

__all__ = ["plot_scores"]

_CURVE_STYLE = {
    "attention": {"color": "tab:blue", "label": "attention λ"},
    "tcam": {"color": "tab:orange", "label": "T-CAM"},
    "wtcam": {"color": "tab:red", "label": "weighted T-CAM (proposals)", "linewidth": 1.8},
}


def _spans(items: Sequence[Interval | tuple[float, float]] | None) -> list[tuple[float, float]]:
    spans = []
    for item in items or ():
        start, end = (item.start_s, item.end_s) if isinstance(item, Interval) else item
        spans.append((float(start), float(end)))
    return spans


def plot_scores(
    path: str | os.PathLike,
    *,
    times_s: np.ndarray,
    curves: Mapping[str, np.ndarray],
    threshold: float,
    intervals: Sequence[Interval | tuple[float, float]],
    ground_truth: Sequence[tuple[float, float]] | None = None,
    title: str,
    outside: Sequence[tuple[float, float]] = (),
    warning: str | None = None,
) -> Path:
    """Write a PNG of frame-level score curves against time (atomically).

    Args:
        path: output PNG file.
        times_s: (N,) time in seconds of every curve sample (real frame times).
        curves: name -> (N,) curve; "attention", "tcam" and "wtcam" get fixed colours and
            labels, other names are drawn with their own name.
        threshold: the proposal threshold, drawn as a dashed line.
        intervals: detected intervals (`Interval` or ``(start_s, end_s)``), shaded red.
        ground_truth: annotated anomalous ``(start_s, end_s)`` spans, shaded green.
        title: usually the video name.
        outside: ``(start_s, end_s)`` of clips outside the training footage, hatched grey.
        warning: drawn in red above the axes (a video outside the training footage).

    Returns:
        The written path.
    """
    times = np.asarray(times_s, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise DataError(f"times_s must be a non-empty 1-D array, got shape {times.shape}")
    if not curves:
        raise DataError("curves is empty: nothing to plot")
    for name, curve in curves.items():
        if np.shape(curve) != times.shape:
            raise DataError(f"curve {name!r} has shape {np.shape(curve)}, times_s {times.shape}")

    fig = Figure(figsize=(11, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (start, end) in enumerate(_spans(ground_truth)):
        ax.axvspan(
            start, end, ymin=0.0, ymax=0.5, color="tab:green", alpha=0.25, label="ground truth" if i == 0 else None
        )
    for i, (start, end) in enumerate(_spans(intervals)):
        ax.axvspan(
            start, end, ymin=0.5, ymax=1.0, color="tab:red", alpha=0.18, label="detected interval" if i == 0 else None
        )
    for i, (start, end) in enumerate(_spans(outside)):
        ax.axvspan(
            start,
            end,
            ymin=0.0,
            ymax=0.06,
            facecolor="0.6",
            edgecolor="0.3",
            hatch="///",
            linewidth=0,
            label="clip outside the training footage" if i == 0 else None,
        )
    for name, curve in curves.items():
        style = _CURVE_STYLE.get(name, {"label": name})
        ax.plot(times, np.asarray(curve), **{"linewidth": 1.0, **style})
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1.0, label=f"threshold {threshold:g}")
    ax.set_xlim(times[0], times[-1] if times[-1] > times[0] else times[0] + 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    if warning:
        import textwrap

        ax.set_title(f"{title}: OUTSIDE THE TRAINING FOOTAGE", color="tab:red", fontweight="bold")
        fig.suptitle("\n".join(textwrap.wrap(warning, 150)), color="tab:red", fontsize="small")
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:red")
            spine.set_linewidth(2.0)
    else:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)

    path = Path(path)
    with atomic_writer(path) as fh:
        fig.savefig(fh, format="png")
    return path
