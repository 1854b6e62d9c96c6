"""The training progress bar: a rich bar on stderr with the running loss parts, and one line per
reported epoch (or nothing, when progress is off)."""

from __future__ import annotations

from collections.abc import Callable

from .history import HELDOUT_LOSS, VAL_METRICS
from .losses import LOSS_PARTS

__all__ = ["ProgressReporter"]


class ProgressReporter:
    """A rich progress bar with the running loss parts (stderr), or nothing."""

    def __init__(self, enabled: bool, n_batches: int, epochs: int) -> None:
        self.enabled, self.n_batches, self.epochs = enabled, n_batches, epochs
        self._progress = None

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
                console=Console(stderr=True),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.n_batches, losses="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int) -> Callable[[dict[str, float]], None] | None:
        if self._progress is None:
            return None
        self._progress.reset(self._task, total=self.n_batches, description=f"epoch {epoch}/{self.epochs}", losses="")
        sums = dict.fromkeys(("total", *LOSS_PARTS), 0.0)
        count = [0]

        def on_step(values: dict[str, float]) -> None:
            count[0] += 1
            for name, value in values.items():
                sums[name] += value
            text = " ".join(f"{name} {sums[name] / count[0]:.3g}" for name in sums)
            self._progress.update(self._task, advance=1, losses=f"loss {text.removeprefix('total ')}")

        return on_step

    def end_epoch(self, line: dict) -> None:
        if self._progress is None:
            return
        parts = ", ".join(f"{p} {line[f'loss_{p}']:.3g}" for p in LOSS_PARTS)
        val = "".join(f"  {n} {line[n]:.4f}" for n in (*VAL_METRICS, HELDOUT_LOSS) if line.get(n) is not None)
        self._progress.console.print(
            f"epoch {line['epoch']:>3}/{self.epochs}  lr {line['lr']:.0e}  "
            f"loss {line['loss']:.4g} ({parts}){val}  [{line['time_s']:.1f} s]",
            markup=False,
            highlight=False,
        )
