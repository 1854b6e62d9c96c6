"""Learning-rate schedules and run length: what the optimizer's lr is at each step (model/README.md §4)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["lr_at_epoch", "lr_at_step", "planned_epochs", "crossed"]


def lr_at_epoch(epoch: int, *, config: TrainConfig) -> float:
    """The learning rate of 1-based ``epoch``: MultiStepLR with one milestone, stepped per epoch."""
    return config.lr * (config.lr_decay if epoch > config.lr_milestone_epoch else 1.0)


def lr_at_step(step: int, *, epoch: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate of 1-based optimizer ``step`` (in 1-based ``epoch``) of a ``total_steps`` run."""
    if config.schedule == "multistep":
        return lr_at_epoch(epoch, config=config)
    if step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    floor = config.lr * config.lr_decay
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def planned_epochs(config: TrainConfig, n_batches: int) -> int:
    """``config.epochs``, raised so that the run makes at least ``config.min_steps`` optimizer steps."""
    return max(config.epochs, math.ceil(config.min_steps / n_batches))


def crossed(epoch: int, n_batches: int, every_steps: int) -> bool:
    """Whether epoch ``epoch`` (1-based) passed a multiple of ``every_steps`` optimizer steps; a
    function of the epoch alone, so a resumed run checkpoints and evaluates where an
    uninterrupted one does."""
    return (epoch * n_batches) // every_steps > ((epoch - 1) * n_batches) // every_steps
