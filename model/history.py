"""A run's per-epoch metrics (``metrics.jsonl``) and its ``summary.json``: written after each
checkpoint, read back on resume.

The names of the metrics an epoch's line may hold besides the losses live here, with the file
they are written to: the hooks that compute them, the summary, the curves and the progress
bar all read them from this one place.
"""

from __future__ import annotations

import json
from pathlib import Path

from vadpipe.extract.fileio import atomic_write_text

__all__ = ["METRICS_FILE", "VAL_METRICS", "HELDOUT_LOSS", "write_metrics", "read_metrics", "summarize"]

METRICS_FILE = "metrics.jsonl"
VAL_METRICS = ("val_video_auc", "val_frame_auc")  # vadpipe.model.validation.Validator
HELDOUT_LOSS = "heldout_loss"  # vadpipe.model.selection.EarlyStopping keeps the weights where it is lowest


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(line) + "\n" for line in history))


def read_metrics(run_dir: Path, *, up_to_epoch: int) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["epoch"] <= up_to_epoch]


def summarize(history: list[dict], *, selected_epoch: int | None = None) -> dict:
    """Last-epoch and best-epoch metrics, labelled (the best epoch per validation metric), and the
    epoch whose weights early stopping kept (None: the last epoch's)."""
    best = {}
    for name in VAL_METRICS:
        scored = [(line[name], line["epoch"]) for line in history if line.get(name) is not None]
        if scored:
            value, epoch = max(scored, key=lambda p: (p[0], -p[1]))  # earliest epoch on ties
            best[name] = {"epoch": epoch, "value": value}
    last_val = next((line for line in reversed(history) if any(line.get(n) is not None for n in VAL_METRICS)), None)
    return {
        "last_epoch": history[-1],
        "last_validation": last_val,
        "best_epoch": best,
        "selected_epoch": selected_epoch,
        "note": "best_epoch picks, per validation metric, the epoch where it was highest (on the validation set); "
        "selected_epoch is the epoch whose weights were saved (early stopping on held-out training "
        "videos; null: the last epoch)",
    }
