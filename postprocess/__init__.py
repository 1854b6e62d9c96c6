"""Post-processing: per-clip scores -> frame curves, proposals, intervals, metrics and plots.

Scoring a video with a model is `vadpipe.model.scoring`. Submodules: ``proposals``
(interpolation and runs above a threshold), ``metrics`` (Table 1 levels and protocols),
``intervals`` (the intervals JSON document), ``frame_intervals`` (curves cut into its entries), ``plot`` (matplotlib Agg), ``evaluate`` (a run
over a feature folder), ``calibration`` (operating points and score calibration chosen on
held-out videos). The names below are re-exported lazily, so importing the package does
not pull in torch or matplotlib until one of them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Proposal": "proposals",
    "interpolate_to_frames": "proposals",
    "find_proposals": "proposals",
    "paint_proposals": "proposals",
    "auc_ap": "metrics",
    "pooled_metrics": "metrics",
    "detection_metrics": "decisions",
    "match_intervals": "decisions",
    "ScoreCalibrator": "calibration",
    "fit_calibrator": "calibration",
    "choose_operating_point": "calibration",
    "Interval": "intervals",
    "IntervalsDocument": "intervals",
    "OperatingPoint": "intervals",
    "VideoIntervals": "intervals",
    "build_video_intervals": "frame_intervals",
    "validate_document": "intervals",
    "write_intervals": "intervals",
    "plot_scores": "plot",
    "evaluate_run": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
