"""The evaluation report's tables for the terminal (``vadpipe evaluate`` and ``vadpipe demo``)."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table

__all__ = ["LEVELS", "pct", "metrics_table", "detection_table"]

LEVELS = ("video", "segment", "frame", "proposal")

# Table 1 of the paper (AUC / AP, %), with alignment; frame and proposal may be swapped (postprocess/README.md §6).
_PAPER_CSL = {"video": (97.79, 98.28), "segment": (85.49, 66.87), "frame": (90.23, 71.68), "proposal": (85.65, 66.05)}
_SWAPPED = {"frame": "proposal", "proposal": "frame"}


def pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def metrics_table(report: dict) -> Table:
    """A rich table of a report from `vadpipe.postprocess.evaluate.evaluate_run` (values in %)."""
    csl = report["protocol"] == "csl"
    table = Table(title=f"{report['protocol']} protocol (%)", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("level", no_wrap=True)
    for name in ("AUC", "AP", "AP trapz", "pairs") + (("paper", "swapped") if csl else ()):
        table.add_column(name, justify="right", no_wrap=True)
    for level in LEVELS:
        m = report[level]
        row = [level, pct(m["auc"]), pct(m["ap"]), pct(m["ap_trapezoid"]), f"{m['n']:,}"]
        if csl:
            row.append("{:.2f}/{:.2f}".format(*_PAPER_CSL[level]))
            row.append("{:.2f}/{:.2f}".format(*_PAPER_CSL[_SWAPPED[level]]) if level in _SWAPPED else "")
        table.add_row(*row)
    return table


def _share(value: float | None, count: int, total: int) -> str:
    return f"{pct(value)} ({count}/{total})"


def detection_table(report: dict) -> Table:
    """The decisions at the operating point: false alarms, interval P/R/F1, frame FPR (%)."""
    d = report["detection"]
    unit = "crops" if report["protocol"] == "csl" else "videos"
    table = Table(title="at the operating point (%)", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("decision", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_row(
        f"false alarms: normal {unit} with an interval",
        _share(d["false_alarm_rate"], d["normal_videos_flagged"], d["normal_videos"]),
    )
    table.add_row(
        f"detections: anomalous {unit} with an interval",
        _share(d["detection_rate"], d["anomalous_videos_flagged"], d["anomalous_videos"]),
    )
    for m in d["intervals"].values():
        t = f"IoU {m['iou_threshold']:g}"
        table.add_row(f"interval precision, {t}", _share(m["precision"], m["true_positives"], m["reported"]))
        table.add_row(f"interval recall, {t}", _share(m["recall"], m["true_positives"], m["ground_truth"]))
        table.add_row(f"interval F1, {t}", pct(m["f1"]))
    f = d["frame"]
    table.add_row("frame false-positive rate", _share(f["fpr"], f["false_positive_frames"], f["negative_frames"]))
    return table
