"""The CSL-TAL training loss, exactly as the authors' code computes it (method.md §3).

For B samples with K views each (view (b, k) of length T'_b, attention λ, video score p):

* ``bce``        mean over the B·K views of BCE(p, y_b), on probabilities (log clamped at -100)
* ``sparsity``   Σ over views of Σ_t |λ_t|
* ``smoothness`` Σ over views of Σ_t (λ_t - λ_{t+1})², within each view
* ``alignment``  (K = 2 only) Σ_b mean_t (λ^{b,1}_t - λ^{b,2}_t)²: a mean over t, then a sum

``total = (bce + w_smooth·smoothness + w_sparsity·sparsity + w_align·alignment) / N`` with
``N = Σ_b K·T'_b``, every term divided (normalize="steps", the code). With normalize="video"
each sample's share of that sum is divided by ``B·K·T'_b`` instead of N, so long and short
videos weigh the same; both agree when all lengths in the batch are equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["NORMALIZATIONS", "WEIGHT_ASSIGNMENTS", "LossConfig", "LossTerms", "csl_loss"]

NORMALIZATIONS = ("steps", "video")

# The paper's eq. 6 and its code use the same two numbers for opposite terms (method.md §5, Q2);
# "code" is the configuration that produced the paper's results and is the default.
WEIGHT_ASSIGNMENTS = {
    "code": {"w_sparsity": 2e-3, "w_smooth": 2e-8},
    "paper": {"w_sparsity": 2e-8, "w_smooth": 2e-3},
}


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms and how the batch total is normalised."""

    w_sparsity: float = 2e-3
    w_smooth: float = 2e-8
    w_align: float = 0.5
    normalize: str = "steps"

    def __post_init__(self) -> None:
        for name in ("w_sparsity", "w_smooth", "w_align"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")

    @classmethod
    def from_assignment(cls, assignment: str = "code", **overrides: float | str) -> "LossConfig":
        """The sparsity/smoothness weights as assigned by the authors' ``code`` or the ``paper`` text."""
        if assignment not in WEIGHT_ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {tuple(WEIGHT_ASSIGNMENTS)}, got {assignment!r}")
        return replace(cls(**WEIGHT_ASSIGNMENTS[assignment]), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


class LossTerms(NamedTuple):
    """Scalar tensors. Each term is already weighted and normalised, so they sum to ``total``."""

    total: Tensor
    bce: Tensor
    sparsity: Tensor
    smoothness: Tensor
    alignment: Tensor
    n_steps: int

    def as_floats(self) -> dict[str, float]:
        names = ("total", "bce", "sparsity", "smoothness", "alignment")
        return {name: float(getattr(self, name).detach()) for name in names}


def csl_loss(attention: Tensor, video_score: Tensor, labels: Tensor, mask: Tensor, *, config: LossConfig) -> LossTerms:
    """The batch loss of CSL-TAL.

    Args:
        attention: (B, K, T) λ of every view, right-padded; K is 1 (no alignment) or 2.
        video_score: (B, K) classifier probability of every view.
        labels: (B,) video labels, 1 = anomalous.
        mask: (B, T) bool, True on the T'_b valid steps of sample b (shared by its K views).
        config: the term weights and the normalisation.

    Returns:
        LossTerms with the total and its four weighted, normalised parts.
    """
    if attention.ndim != 3:
        raise ValueError(f"attention must be (B, K, T), got {tuple(attention.shape)}")
    batch, n_views, steps = attention.shape
    if n_views not in (1, 2):
        raise ValueError(f"K must be 1 or 2 views per sample, got {n_views}")
    if video_score.shape != (batch, n_views) or labels.shape != (batch,) or mask.shape != (batch, steps):
        raise ValueError(
            f"shape mismatch: attention {tuple(attention.shape)}, video_score {tuple(video_score.shape)}, "
            f"labels {tuple(labels.shape)}, mask {tuple(mask.shape)}"
        )
    dtype = attention.dtype
    valid = mask.to(dtype)
    lengths = valid.sum(1)  # (B,) T'_b
    if bool((lengths < 1).any()):
        raise ValueError("every sample needs at least one valid step")
    lam = attention * valid.unsqueeze(1)

    # Per-sample raw terms, each a (B,) tensor whose sum over b is the code's batch term.
    targets = labels.to(dtype).unsqueeze(1).expand(batch, n_views)
    bce = F.binary_cross_entropy(video_score, targets, reduction="none").sum(1) / (batch * n_views)
    sparsity = lam.abs().sum((1, 2))
    pairs = (mask[:, 1:] & mask[:, :-1]).to(dtype).unsqueeze(1)
    smoothness = ((lam[:, :, 1:] - lam[:, :, :-1]).square() * pairs).sum((1, 2))
    if n_views == 2:
        alignment = ((lam[:, 0] - lam[:, 1]).square() * valid).sum(1) / lengths
    else:
        alignment = torch.zeros_like(lengths)

    n_steps = int(lengths.sum().item()) * n_views
    weighted = {
        "bce": bce,
        "sparsity": config.w_sparsity * sparsity,
        "smoothness": config.w_smooth * smoothness,
        "alignment": config.w_align * alignment,
    }
    if config.normalize == "steps":
        parts = {name: term.sum() / n_steps for name, term in weighted.items()}
    else:
        per_sample = batch * n_views * lengths
        parts = {name: (term / per_sample).sum() for name, term in weighted.items()}
    total = parts["bce"] + parts["sparsity"] + parts["smoothness"] + parts["alignment"]
    return LossTerms(total=total, n_steps=n_steps, **parts)
