"""The CSL-TAL training loss, exactly as the authors' code computes it (model/README.md §3).

For B samples with K views each (view (b, k) of length T'_b, attention λ, video score p):

* ``bce``        mean over the B·K views of BCE(p, y_b), on probabilities (log clamped at -100)
* ``sparsity``   Σ over views of Σ_t |λ_t|
* ``smoothness`` Σ over views of Σ_t (λ_t - λ_{t+1})², within each view
* ``alignment``  (K = 2 only) Σ_b mean_t (λ^{b,1}_t - λ^{b,2}_t)²: a mean over t, then a sum
* ``mil``        (vadpipe's addition, off in the paper recipe) a top-k multiple-instance term:
  mean over the B·K views of BCE(mean of the k largest ψ_t, y_b), ψ = λ·g(x_t) the weighted
  T-CAM, k = max(1, ⌊mil_top_fraction·T'_b⌋). It trains the per-clip curve that detection
  thresholds, at the per-clip input scale it is used at (the BCE only sees g(Σ λ_t x_t)).

``total = (bce + w_smooth·smoothness + w_sparsity·sparsity + w_align·alignment + w_mil·mil) / N`` with
``N = Σ_b K·T'_b``, every term divided (normalize="steps", the code). With normalize="video"
each sample's share of that sum is divided by its own ``B·K·T'_b`` instead of N: a long video in
the batch no longer shrinks the shares of the short ones (its per-step terms weigh as much as
theirs; its BCE and MIL terms, like every video's, are divided by its own length). Both agree
when all lengths in the batch are equal.

With K = 2 views the code divides the BCE and MIL terms by K twice (a mean over the B·K views,
then the normalisation by K·T'), the sparsity and smoothness sums by K once: a second view
halves the classification signal against the sparsity pull on the attention.
``view_scaling="code"`` keeps that (the paper recipe); ``"once"`` divides BCE and MIL by K once,
like the other terms (identical when K = 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "NORMALIZATIONS",
    "VIEW_SCALINGS",
    "WEIGHT_ASSIGNMENTS",
    "LOSS_PARTS",
    "LossConfig",
    "LossTerms",
    "csl_loss",
    "top_k_mean",
]

NORMALIZATIONS = ("steps", "video")
VIEW_SCALINGS = ("code", "once")
LOSS_PARTS = ("bce", "sparsity", "smoothness", "alignment", "mil")  # the weighted terms of the total

# The paper's eq. 6 and its code use the same two numbers for opposite terms (model/README.md §3 "The weights", §5);
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
    w_mil: float = 0.0
    mil_top_fraction: float = 1 / 16
    view_scaling: str = "code"

    def __post_init__(self) -> None:
        for name in ("w_sparsity", "w_smooth", "w_align", "w_mil"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 < self.mil_top_fraction <= 1:
            raise ValueError(f"mil_top_fraction must be in (0, 1], got {self.mil_top_fraction}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.view_scaling not in VIEW_SCALINGS:
            raise ValueError(f"view_scaling must be one of {VIEW_SCALINGS}, got {self.view_scaling!r}")

    @classmethod
    def from_assignment(cls, assignment: str = "code", **overrides: float | str) -> LossConfig:
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
    mil: Tensor
    n_steps: int

    def as_floats(self) -> dict[str, float]:
        names = ("total", *LOSS_PARTS)
        return {name: float(getattr(self, name).detach()) for name in names}


def top_k_mean(scores: Tensor, mask: Tensor, *, fraction: float) -> Tensor:
    """Mean of the k largest valid scores of each row, k = max(1, ⌊fraction·T'⌋) per row.

    Args:
        scores: (R, T) right-padded scores; mask: (R, T) bool, True on valid steps.
    Returns:
        (R,) the top-k means.
    """
    lengths = mask.sum(1)
    k = torch.clamp((lengths.to(torch.float64) * fraction).floor().to(torch.long), min=1)
    ranked = scores.masked_fill(~mask, float("-inf")).sort(dim=1, descending=True).values
    take = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0) < k.unsqueeze(1)
    return (ranked.masked_fill(~take, 0.0)).sum(1) / k.to(scores.dtype)


def csl_loss(
    attention: Tensor,
    video_score: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    config: LossConfig,
    wtcam: Tensor | None = None,
) -> LossTerms:
    """The batch loss of CSL-TAL.

    Args:
        attention: (B, K, T) λ of every view, right-padded; K is 1 (no alignment) or 2.
        video_score: (B, K) classifier probability of every view.
        labels: (B,) video labels, 1 = anomalous.
        mask: (B, T) bool, True on the T'_b valid steps of sample b (shared by its K views).
        config: the term weights and the normalisation.
        wtcam: (B, K, T) weighted T-CAM ψ of every view; needed when ``config.w_mil > 0``.

    Returns:
        LossTerms with the total and its five weighted, normalised parts.
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
    per_view = batch * n_views if config.view_scaling == "code" else batch  # "once": the normalisation divides by K
    bce = F.binary_cross_entropy(video_score, targets, reduction="none").sum(1) / per_view
    sparsity = lam.abs().sum((1, 2))
    pairs = (mask[:, 1:] & mask[:, :-1]).to(dtype).unsqueeze(1)
    smoothness = ((lam[:, :, 1:] - lam[:, :, :-1]).square() * pairs).sum((1, 2))
    if n_views == 2:
        alignment = ((lam[:, 0] - lam[:, 1]).square() * valid).sum(1) / lengths
    else:
        alignment = torch.zeros_like(lengths)

    if config.w_mil > 0:
        if wtcam is None or wtcam.shape != attention.shape:
            raise ValueError(
                f"the MIL term needs the weighted T-CAM shaped like the attention {tuple(attention.shape)}"
            )
        view_mask = mask.unsqueeze(1).expand(batch, n_views, steps).reshape(batch * n_views, steps)
        top = top_k_mean(wtcam.reshape(batch * n_views, steps), view_mask, fraction=config.mil_top_fraction)
        mil = F.binary_cross_entropy(top.view(batch, n_views), targets, reduction="none").sum(1) / per_view
    else:
        mil = torch.zeros_like(lengths)

    n_steps = int(lengths.sum().item()) * n_views
    weighted = {
        "bce": bce,
        "sparsity": config.w_sparsity * sparsity,
        "smoothness": config.w_smooth * smoothness,
        "alignment": config.w_align * alignment,
        "mil": config.w_mil * mil,
    }
    if config.normalize == "steps":
        parts = {name: term.sum() / n_steps for name, term in weighted.items()}
    else:
        per_sample = batch * n_views * lengths
        parts = {name: (term / per_sample).sum() for name, term in weighted.items()}
    total = parts["bce"] + parts["sparsity"] + parts["smoothness"] + parts["alignment"] + parts["mil"]
    return LossTerms(total=total, n_steps=n_steps, **parts)
