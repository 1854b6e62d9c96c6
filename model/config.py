"""Every training hyper-parameter in one frozen record (`TrainConfig`), and the names its
schedule and view settings may take: what a run's ``config.json`` stores as ``training``.

Its own module so that the run folder (`vadpipe.model.run_config`), the schedules and the samplers
read the settings without importing the training loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .augment import VIEW_MODES
from .losses import LossConfig
from .net import ModelConfig

__all__ = ["SCHEDULES", "TrainConfig"]

SCHEDULES = ("multistep", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyper-parameter; the defaults are the paper's configuration (model/README.md §6).
    vadpipe's default recipe is ``vadpipe.recipes.RECIPES["default"].training``.

    Args:
        model: network settings (``feature_dim`` is taken from the data when training).
        loss: loss weights and normalisation.
        epochs: number of passes over the training samples.
        batch_size: samples (crop files) per optimizer step.
        lr: Adam learning rate before the milestone.
        lr_milestone_epoch: after this epoch the lr is multiplied by ``lr_decay`` (30 in the
            authors' code, 10 in the paper's text).
        lr_decay: the factor applied at the milestone.
        align: two views per sample and the alignment loss (False: one view, Table 1's
            "w/o align" row).
        block_len: L, the augmentation block length.
        seed: seeds weight init, sample order and view picks.
        schedule: ``"multistep"`` (the lr drops by ``lr_decay`` after ``lr_milestone_epoch``,
            the authors' code) or ``"cosine"`` (linear warm-up over ``warmup_steps`` optimizer
            steps, then a cosine decay to ``lr * lr_decay`` at the last step).
        warmup_steps: optimizer steps of linear warm-up (``"cosine"`` only).
        min_steps: train for at least this many optimizer steps: the epochs are raised to
            reach it, so that a few dozen videos get as many updates as they need while a
            large set keeps its epochs.
        balanced: every batch holds half normal and half anomalous samples; an epoch covers
            the larger class once and cycles through reshuffles of the smaller one.
        early_stopping: keep the weights of the evaluation with the lowest held-out loss
            (when held-out videos are given to :func:`train`), instead of the last ones.
        select_every_steps: evaluate on the held-out videos after each epoch that passes a
            multiple of this many optimizer steps, and after the last.
        views: ``"random"`` (an independent row per block and view, the authors') or
            ``"phase"`` (each view one phase-shifted subsequence, see :func:`view_indices`).
    """

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    lr_milestone_epoch: int = 30
    lr_decay: float = 0.1
    align: bool = True
    block_len: int = 3
    seed: int = 1
    schedule: str = "multistep"
    warmup_steps: int = 0
    min_steps: int = 0
    balanced: bool = False
    early_stopping: bool = False
    select_every_steps: int = 50
    views: str = "random"

    def __post_init__(self) -> None:
        if self.views not in VIEW_MODES:
            raise ValueError(f"views must be one of {VIEW_MODES}, got {self.views!r}")
        for name in ("warmup_steps", "min_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "block_len", "select_every_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.lr_milestone_epoch, int) or self.lr_milestone_epoch < 0:
            raise ValueError(f"lr_milestone_epoch must be an int >= 0, got {self.lr_milestone_epoch!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def n_views(self) -> int:
        return 2 if self.align else 1

    def to_dict(self) -> dict:
        """The training settings (model settings are stored separately in a run's config)."""
        data = asdict(self)
        del data["model"]
        return {**data, "n_views": self.n_views}

    @classmethod
    def from_dict(cls, training: dict, *, model: dict) -> TrainConfig:
        values = {k: v for k, v in training.items() if k != "n_views"}
        return cls(model=ModelConfig.from_dict(model), loss=LossConfig(**values.pop("loss", {})), **values)
