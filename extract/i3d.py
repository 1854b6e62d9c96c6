"""Inception-v1 I3D (Carreira & Zisserman, 2017), RGB stream, as DeepMind's Kinetics-400 model runs it.

Architecture only: no paths, no downloads (weights live in ``weights.py``). Conventions that
matter for reproducing the original network numerically:

* TF "SAME" padding, computed from the actual input size (extra padding at the end of a dim);
* BatchNorm with epsilon 1e-3 and no learned scale (Sonnet v1 defaults);
* input (B, 3, T, H, W) RGB in [-1, 1].

Module names follow the widely used PyTorch port layout (``Mixed_3b.b1a.conv3d.weight``...),
so the state dict maps one-to-one onto the original checkpoint.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InceptionI3d", "ENDPOINTS", "FEATURE_DIM", "NUM_CLASSES", "fold_batch_norm"]

FEATURE_DIM = 1024
NUM_CLASSES = 400

ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)

Triple = tuple[int, int, int]


def _same_pads(size: tuple[int, ...], kernel: Triple, stride: Triple) -> list[tuple[int, int]]:
    """TF 'SAME' (low, high) padding per dim: out = ceil(in / s), extra pixel goes at the end."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        out = math.ceil(n / s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _flat_pad(pads: list[tuple[int, int]]) -> list[int]:
    # F.pad wants the last dim first: (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)
    return [p for lo_hi in reversed(pads) for p in lo_hi]


class Unit3D(nn.Module):
    """Conv3d (no bias, SAME padding) -> BatchNorm(eps 1e-3, no scale) -> ReLU; or a bare conv with bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        batch_norm: bool = True,
        activation: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        # The original has no BN scale: keep the weight at 1 and frozen (it is not in the checkpoint).
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.001) if batch_norm else None
        if self.bn is not None:
            self.bn.weight.requires_grad_(False)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(tuple(x.shape[2:]), self.kernel, self.stride)
        if all(lo == hi for lo, hi in pads):
            x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, padding=[lo for lo, _ in pads])
        else:
            x = self.conv3d(F.pad(x, _flat_pad(pads)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding (pads with -inf, so any input sign is handled)."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(tuple(x.shape[2:]), self.kernel, self.stride)
        if any(lo or hi for lo, hi in pads):
            x = F.pad(x, _flat_pad(pads), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c3b)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Inception-v1 I3D up to ``Mixed_5c`` plus the Kinetics logits head.

    Inputs: ``(B, 3, T, H, W)`` float, RGB scaled to [-1, 1]; designed for 224x224 and T a
    multiple of 8 (16 frames -> ``Mixed_5c`` of shape (B, 1024, 2, 7, 7)).

    Example:
        >>> net = InceptionI3d().eval()
        >>> net.forward_features(torch.zeros(1, 3, 16, 224, 224)).shape
        torch.Size([1, 1024])
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, activation=False, bias=True)

    def forward_endpoints(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every endpoint from ``Conv3d_1a_7x7`` to ``Mixed_5c``, to locate a layer that goes wrong."""
        out = {}
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``Mixed_5c`` feature map, (B, 1024, T/8, H/32, W/32)."""
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip feature (B, 1024): mean of ``Mixed_5c`` over time and space."""
        return self.forward_trunk(x).mean(dim=(2, 3, 4))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Kinetics logits (B, 400) from ``forward_features``' (B, 1024) output.

        DeepMind's head is AvgPool (2, 7, 7) VALID -> 1x1x1 conv -> mean over time. The conv is
        linear, so for a 16-frame clip (``Mixed_5c`` of 2x7x7: one pooling window) it is the conv
        applied to the global mean, which is what this computes. For longer clips DeepMind's
        sliding windows weigh the first and last time steps by half; vadpipe only scores
        16-frame clips' features, and ``forward`` stays ``forward_head(forward_features(x))``.
        """
        conv = self.logits.conv3d
        return F.linear(features, conv.weight.flatten(1), conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def fold_batch_norm(model: InceptionI3d) -> InceptionI3d:
    """An inference-only copy of ``model`` with every BatchNorm folded into its convolution.

    Inference BN is affine per channel, ``y = (x - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)``, so it folds into the conv before it: weights scaled by ``s``,
    bias ``beta - mean * s``. That saves one pass over every activation map;
    outputs agree with the unfolded network to float rounding (~1e-6, tested against the
    reference outputs). The copy cannot be trained: its BN statistics are gone.
    """
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for unit in folded.modules():
            if not isinstance(unit, Unit3D) or unit.bn is None:
                continue
            bn, conv = unit.bn, unit.conv3d
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1, 1))
            conv.bias = nn.Parameter(bias, requires_grad=False)
            unit.bn = None
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
