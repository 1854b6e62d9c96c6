"""The CSL-TAL network: masked causal temporal conv, attention head, classifier, T-CAM.

Follows the authors' code (aimagelab/CSL-TAL, model/model.py), see model/README.md §1: three Linear
layers in the MLP attention head, a sum (not a mean) over time of attention-weighted *raw*
features, and a T-CAM that applies the classifier to each raw feature row, ``g(x_t)``.

Batches are right-padded ``(B, T, F)`` tensors with a ``(B, T)`` mask. Internally the valid rows
are packed into one ``(N, F)`` matrix, so compute scales with the real number of steps, not
with ``B * max(T)``, and padded steps cannot leak into any sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ATTENTION_KINDS", "ModelConfig", "ModelOutput", "MaskedCausalConv1d", "CSLTAL"]

ATTENTION_KINDS = ("mlp", "gated")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the network (the paper's model is the default).

    Args:
        attention: ``"mlp"`` (the paper's STPN-like head) or ``"gated"`` (Ilse et al., the
            authors' later default).
        feature_dim: width F of the input feature rows (1024 for I3D RGB).
        kernel_size: odd temporal kernel size of the masked conv; taps ``0 .. k//2`` are active,
            so the conv sees ``x_{t-k//2} .. x_t`` (causal, current step included).
    """

    attention: str = "mlp"
    feature_dim: int = 1024
    kernel_size: int = 5

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if not isinstance(self.feature_dim, int) or self.feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive int, got {self.feature_dim!r}")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            # An even kernel with the authors' mask would exclude the current step.
            raise ValueError(f"kernel_size must be a positive odd int, got {self.kernel_size!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        unknown = set(data) - {"attention", "feature_dim", "kernel_size"}
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**data)


class ModelOutput(NamedTuple):
    """Per-step and per-video outputs; padded steps hold 0 in ``attention`` and ``tcam``.

    attention: (B, T) in [0, 1]; video_score: (B,) in (0, 1); tcam: (B, T) ``g(x_t)`` in (0, 1),
    or None when the forward was asked not to compute it (training).
    """

    attention: Tensor
    video_score: Tensor
    tcam: Tensor | None

    @property
    def weighted_tcam(self) -> Tensor:
        """``attention * tcam``: the per-step anomaly score used for localisation (ψ_t)."""
        if self.tcam is None:
            raise ValueError("this output was computed with with_tcam=False")
        return self.attention * self.tcam


class _TapsProduct(torch.autograd.Function):
    """``out[n] = bias + Σ_j W_j rows[r_j(n)]`` with ``flat[n, j] = r_j(n)·J + j`` (an index past the
    rows' products reads zeros: a step before its sequence's start).

    Forward: one ``(U, F) @ (F, J·F)`` product of every distinct row with every tap, then J
    gathers. Backward: J scatter-adds of the output gradient onto those products, then one
    ``(J·F, U) @ (U, F)`` product for the taps' gradient. Two views of a training sample share
    about a third of their rows, and each is multiplied once; nothing else is copied."""

    @staticmethod
    def forward(ctx, rows: Tensor, taps: Tensor, bias: Tensor, flat: Tensor) -> Tensor:  # noqa: D102
        n_taps, out_dim, in_dim = taps.shape
        products = rows.new_empty(rows.shape[0] + 1, n_taps * out_dim)  # + one row of zeros
        torch.mm(rows, taps.view(n_taps * out_dim, in_dim).t(), out=products[:-1])
        products[-1].zero_()
        table = products.view(-1, out_dim)
        out = table.index_select(0, flat[:, -1])
        for tap in range(n_taps - 1):
            out += table.index_select(0, flat[:, tap])
        out += bias
        ctx.save_for_backward(rows, taps, flat)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        rows, taps, flat = ctx.saved_tensors
        n_taps, out_dim, in_dim = taps.shape
        table = grad.new_zeros((rows.shape[0] + 1) * n_taps, out_dim)
        for tap in range(n_taps):
            table.index_add_(0, flat[:, tap], grad)
        d_products = table.view(rows.shape[0] + 1, n_taps * out_dim)[:-1]
        d_rows = d_products.mm(taps.view(n_taps * out_dim, in_dim)) if ctx.needs_input_grad[0] else None
        d_taps = d_products.t().mm(rows).view_as(taps) if ctx.needs_input_grad[1] else None
        d_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return d_rows, d_taps, d_bias, None


class MaskedCausalConv1d(nn.Module):
    """Conv1d over time whose taps after the centre are masked to zero, holding only the active taps.

    Equivalent to the authors' ``conv1d(x, weight * mask, bias, padding=k//2)`` with the mask
    on taps ``0 .. k//2``, but computed only on the active taps and on packed rows: output
    ``t = bias + sum_j W_j x_{t-k//2+j}`` with zeros before the start of each sequence.

    The parameter ``taps`` holds the active taps, ``(k//2+1, F, F)``, ``taps[j] = W_j``: no copy
    of the weight per step, no gradient or Adam moments for the masked taps (a third of the
    model's parameters at k=5). ``weight`` is the full ``(F, F, k)`` tensor with zero masked taps,
    and it is what ``state_dict`` holds and loads, so weights files keep the nn.Conv1d layout.
    The init is PyTorch's default Conv1d init (fan-in over all k taps, as in the original), drawn
    on the full tensor with the same random numbers as ``nn.Conv1d``.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.n_active = kernel_size // 2 + 1
        self.padding = kernel_size // 2
        full = torch.empty(channels, channels, kernel_size)
        bias = torch.empty(channels)
        nn.init.kaiming_uniform_(full, a=math.sqrt(5))  # nn.Conv1d.reset_parameters, same draws
        bound = 1 / math.sqrt(channels * kernel_size)
        nn.init.uniform_(bias, -bound, bound)
        self.taps = nn.Parameter(self.pack(full))
        self.bias = nn.Parameter(bias)

    def pack(self, full: Tensor) -> Tensor:
        """The ``(F, F, k)`` conv weight's active taps as the ``(n_active, F, F)`` ``taps``."""
        return full[:, :, : self.n_active].permute(2, 0, 1).contiguous()

    @property
    def weight(self) -> Tensor:
        """The full ``(F, F, k)`` weight, masked taps zero (differentiable, a new tensor)."""
        return F.pad(self.taps.permute(1, 2, 0), (0, self.kernel_size - self.n_active))

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        weight = self.weight
        destination[prefix + "weight"] = weight if keep_vars else weight.detach()
        destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        key = prefix + "weight"
        if key in state_dict:
            full = state_dict.pop(key)
            expected = (self.channels, self.channels, self.kernel_size)
            if tuple(full.shape) != expected:
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(full.shape)}, "
                    f"the shape in current model is {expected}."
                )
                return
            state_dict[prefix + "taps"] = self.pack(full)  # the masked taps are ignored, as the mask does
        elif strict:
            missing_keys.append(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if prefix + "taps" in missing_keys:
            missing_keys.remove(prefix + "taps")

    def forward_packed(self, x: Tensor, positions: Tensor, source: Tensor | None = None) -> Tensor:
        """Args: x (U, F) feature rows; positions (N,) step index of each output row inside its
        own sequence, the sequences back to back; source (N,) the row of x each step reads (None:
        step n reads row n). Returns (N, F)."""
        n_steps = positions.shape[0]
        source = torch.arange(n_steps, device=x.device) if source is None else source
        outside = x.shape[0] * self.n_active  # the zero row of _TapsProduct's products
        flat = torch.empty(n_steps, self.n_active, dtype=torch.long, device=x.device)
        for tap in range(self.n_active):  # tap j sees lag = n_active - 1 - j
            lag = self.n_active - 1 - tap
            earlier = torch.cat([source.new_zeros(min(lag, n_steps)), source[: n_steps - lag]]) if lag else source
            flat[:, tap] = torch.where(positions >= lag, earlier * self.n_active + tap, outside + tap)
        return _TapsProduct.apply(x, self.taps, self.bias, flat)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, F, T) as for nn.Conv1d (all steps valid). Returns (B, F, T)."""
        return F.conv1d(x, self.weight, self.bias, padding=self.padding)


class _MLPAttention(nn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 1))


class _GatedAttention(nn.Module):
    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.value = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, 1)
        for layer in (self.value, self.gate, self.out):  # λ ≈ 0.5 everywhere at the start
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x)))


class _Classifier(nn.Sequential):
    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        for layer in (self[0], self[2]):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)


class CSLTAL(nn.Module):
    """Attention-based weakly supervised anomaly model (CSL-TAL / STPN-like).

    Inputs: x (B, T, F) float, right-padded; mask (B, T) bool, True on valid steps (a prefix of
    each row), None when every step is valid.

    Example:
        >>> model = CSLTAL(ModelConfig(feature_dim=8))
        >>> out = model(torch.rand(2, 5, 8), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool())
        >>> out.attention.shape, out.video_score.shape, float(out.attention[1, 3])
        (torch.Size([2, 5]), torch.Size([2]), 0.0)
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        dim = self.config.feature_dim
        self.conv = MaskedCausalConv1d(dim, self.config.kernel_size)
        self.attention = _MLPAttention(dim) if self.config.attention == "mlp" else _GatedAttention(dim)
        self.classifier = _Classifier(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, with_tcam: bool = True) -> ModelOutput:
        if x.ndim != 3 or x.shape[2] != self.config.feature_dim:
            raise ValueError(f"x must be (B, T, {self.config.feature_dim}), got {tuple(x.shape)}")
        batch, steps, _ = x.shape
        if mask is None:
            mask = torch.ones(batch, steps, dtype=torch.bool, device=x.device)
        self._check_mask(mask, (batch, steps))
        packed = x[mask]  # (N, F), row-major: each sequence's steps back to back
        return self._forward_packed(packed, None, mask, with_tcam=with_tcam)

    def forward_rows(self, rows: Tensor, source: Tensor, mask: Tensor, *, with_tcam: bool = True) -> ModelOutput:
        """The forward of ``x = rows[source]`` (right-padded by ``mask``) without building x: each
        distinct row goes through the conv's product (and the T-CAM's classifier) once.

        Args:
            rows: (U, F) feature rows; source: (B, T) long, the row step t of sequence b reads
                (any valid index on padding); mask: (B, T) bool, right-padded.
        """
        if rows.ndim != 2 or rows.shape[1] != self.config.feature_dim:
            raise ValueError(f"rows must be (U, {self.config.feature_dim}), got {tuple(rows.shape)}")
        if source.ndim != 2 or source.dtype != torch.long:
            raise ValueError(f"source must be a (B, T) long tensor, got {source.dtype} {tuple(source.shape)}")
        self._check_mask(mask, tuple(source.shape))
        return self._forward_packed(rows, source[mask], mask, with_tcam=with_tcam)

    @staticmethod
    def _check_mask(mask: Tensor, shape: tuple[int, int]) -> None:
        if mask.shape != shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {shape}, got {mask.dtype} {tuple(mask.shape)}")
        if shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("mask must be right-padded: True on a prefix of each row, then False")

    def _forward_packed(self, rows: Tensor, source: Tensor | None, mask: Tensor, *, with_tcam: bool) -> ModelOutput:
        """``rows`` (U, F); step n of the packed valid steps reads ``rows[source[n]]`` (None: row n)."""
        batch, steps = mask.shape
        device = rows.device
        positions = torch.arange(steps, device=device).expand(batch, steps)[mask]
        sequence = torch.arange(batch, device=device).unsqueeze(1).expand(batch, steps)[mask]
        columns = torch.arange(positions.shape[0], device=device) if source is None else source

        hidden = self.conv.forward_packed(rows, positions, source)  # no activation after the conv (model/README.md §1)
        lam = torch.sigmoid(self.attention(hidden)).squeeze(1)  # (N,)
        # Σ_t λ_t x_t per sequence, as one (B, U) @ (U, F) product (scatter-adds are slow on CPU)
        weights = rows.new_zeros(batch, rows.shape[0]).index_put((sequence, columns), lam, accumulate=True)
        video_score = torch.sigmoid(self.classifier(weights @ rows)).squeeze(1)

        attention = rows.new_zeros(batch, steps).masked_scatter(mask, lam)
        tcam = None
        if with_tcam:
            per_row = torch.sigmoid(self.classifier(rows)).squeeze(1)
            tcam = rows.new_zeros(batch, steps).masked_scatter(mask, per_row if source is None else per_row[source])
        return ModelOutput(attention, video_score, tcam)

    def num_parameters(self) -> int:
        """Parameters, counting the full k-tap conv tensor as the original code prints."""
        return sum(v.numel() for v in self.state_dict().values())
