"""``curves.png``: the training loss parts and the validation AUCs over the epochs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vadpipe.extract.fileio import atomic_write_bytes

from .history import VAL_METRICS
from .losses import LOSS_PARTS

__all__ = ["plot_curves"]


def plot_curves(history: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # the OO API: no global backend state

    epochs = [line["epoch"] for line in history]
    has_val = any(line.get(n) is not None for line in history for n in VAL_METRICS)
    fig = Figure(figsize=(10 if has_val else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    for name in ("loss", *(f"loss_{p}" for p in LOSS_PARTS)):
        values = [line[name] if line.get(name, 0) > 0 else np.nan for line in history]
        if not all(np.isnan(values)):
            axes[0].plot(epochs, values, label=name, lw=2 if name == "loss" else 1)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="loss (weighted, normalised)", title="training loss")
    axes[0].legend(fontsize="small")
    if has_val:
        for name in VAL_METRICS:
            points = [(line["epoch"], line[name]) for line in history if line.get(name) is not None]
            if points:
                axes[1].plot(*zip(*points), marker="o", label=name)
        axes[1].set(xlabel="epoch", ylabel="AUC", title="validation", ylim=(0, 1))
        axes[1].legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
