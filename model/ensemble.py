"""Several CSL-TAL networks trained alike (different seeds, and cross-fitted on different folds of
the training videos, see `vadpipe.ensemble_training`), scored as one.

One training run can be weak (which videos it was trained on, its init); the mean of a few
members' weighted T-CAMs is not held hostage by one of them. An `Ensemble` is only a container:
`vadpipe.model.scoring.score_video`, the one scoring function, runs each member and averages their weighted T-CAMs (λ_m·a_m, never
mean(λ)·mean(a)), so detect, evaluate, calibration and watch all score an ensemble the same way.
Its weights are one safetensors file (``members.<i>.<name>``), its size is the run config's
``ensemble`` section (`vadpipe.model.run.load_run`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .net import CSLTAL, ModelConfig

__all__ = ["Ensemble"]


class Ensemble(torch.nn.Module):
    """Members with one `ModelConfig`; ``config`` is theirs, so code that reads a model's
    settings (feature width, kernel size) reads an ensemble's the same way."""

    def __init__(self, members: Sequence[CSLTAL]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        configs = {m.config for m in members}
        if len(configs) != 1:
            raise ValueError(f"ensemble members must share one model config, got {len(configs)} different ones")
        self.members = torch.nn.ModuleList(members)

    @property
    def config(self) -> ModelConfig:
        return self.members[0].config

    @classmethod
    def empty(cls, config: ModelConfig, size: int) -> Ensemble:
        """``size`` fresh members (to load saved weights into)."""
        return cls([CSLTAL(config) for _ in range(size)])

    def forward(self, *args, **kwargs):  # noqa: D401
        raise TypeError("an Ensemble is scored by vadpipe.model.scoring (score_video), member by member")
