"""Frame preprocessing: shorter side to 256 (antialiased bilinear), 224 crops, scaling to [-1, 1].

Matches the reference pipeline (Pillow BILINEAR resize, long side truncated, floor crop offsets)
to within 1-2 grey levels.

The resize is ``torch.nn.functional.interpolate`` on uint8 (bilinear, antialiased): the very
kernel torchvision's v2 ``resize`` calls for uint8 tensors on CPU, byte for byte (a test checks
against torchvision), without importing torchvision, which costs every command about 2 CPU
seconds of start-up (``bench/startup.py``). Crops and flips are views and ``flip``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["resized_size", "resize_frame", "crop_boxes", "crop_clip", "to_unit_range"]


def resized_size(height: int, width: int, short: int = 256) -> tuple[int, int]:
    """(H, W) with the shorter side at ``short`` and the longer side ``int(short * long / short_in)``."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def resize_frame(rgb: np.ndarray, short: int = 256) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, h, w) uint8 tensor, shorter side ``short``, antialiased bilinear."""
    frame = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    oh, ow = resized_size(frame.shape[1], frame.shape[2], short)
    if (oh, ow) == tuple(frame.shape[1:]):
        return frame.contiguous()
    return F.interpolate(frame[None], size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)[0]


def crop_boxes(height: int, width: int, size: int, mode: str) -> list[tuple[int, int, bool]]:
    """(top, left, hflip) per crop index: centre first (floor offsets), then the four corners."""
    center = ((height - size) // 2, (width - size) // 2, False)
    if mode == "center":
        return [center]
    five = [
        center,
        (0, 0, False),
        (0, width - size, False),
        (height - size, 0, False),
        (height - size, width - size, False),
    ]
    if mode == "five":
        return five
    return five + [(top, left, True) for top, left, _ in five]


def crop_clip(clip: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (n_crops, 3, T, size, size) uint8."""
    boxes = crop_boxes(clip.shape[2], clip.shape[3], size, mode)
    crops = []
    for top, left, flip in boxes:
        c = clip[..., top : top + size, left : left + size]
        crops.append(c.flip(-1) if flip else c)
    return torch.stack(crops).permute(0, 2, 1, 3, 4)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1] as the original network expects (x / 127.5 - 1)."""
    return x.float().div_(127.5).sub_(1.0)
