"""Drawing: each figure as soft-edged, shaded capsules with a shadow, composited onto a frame."""

from __future__ import annotations

import numpy as np

from vadpipe.synth.figures import Figures
from vadpipe.synth.motion import Tracks

__all__ = ["draw_people"]

# Body geometry in figure heights (standing figure, feet at the origin, v up, u forward).
_LEG, _ARM = 0.47, 0.32
_HIP_TO_SHOULDER, _HIP_TO_NECK, _HIP_TO_HEAD = 0.27, 0.30, 0.40
# Capsules in drawing order: far arm, far leg, near leg, torso, head, near arm.
_RADII = np.array([0.033, 0.045, 0.045, 0.085, 0.075, 0.033], np.float32)


def draw_people(frame: np.ndarray, tracks: Tracks, t: int, figures: Figures) -> None:
    """Draw every figure of frame ``t`` onto ``frame`` (float32, modified in place).

    All shadows go down first (they lie on the ground), then the figures back to front, each as
    soft-edged shaded capsules. The pixel maths runs once for all capsules of the frame on
    equally sized patches; only the compositing, which must follow the drawing order, loops.
    """
    order = np.argsort(tracks.y[t], kind="stable")
    a, b, radii, colours, shadows = (v[order] for v in _pose_capsules(tracks, t, figures))
    height, width = frame.shape[:2]

    cx, cy, rx, ry = (shadows[:, i, None, None] for i in range(4))
    lo, xs, ys = _patches(shadows[:, :2] - shadows[:, 2:], shadows[:, :2] + shadows[:, 2:])
    ellipse = ((xs[:, None, :] - cx) / rx) ** 2 + ((ys[:, :, None] - cy) / ry) ** 2
    # Per-channel copies: numpy multiplies same-shaped blocks several times faster than it broadcasts (h, w, 1).
    darken = np.repeat((1.0 - 0.35 * np.clip(2.0 * (1.0 - ellipse), 0.0, 1.0))[..., None], 3, axis=3)
    for k, (x0, y0) in enumerate(lo.tolist()):
        frame_part, patch_part = _crop(x0, y0, darken.shape[2], darken.shape[1], width, height)
        frame[frame_part] *= darken[k][patch_part]

    a, b = a.reshape(-1, 2), b.reshape(-1, 2)
    r = radii.reshape(-1)
    lo, xs, ys = _patches(np.minimum(a, b) - r[:, None], np.maximum(a, b) + r[:, None])
    d = b - a
    ax, ay, dx, dy = (v[:, None, None] for v in (a[:, 0], a[:, 1], d[:, 0], d[:, 1]))
    px, py = xs[:, None, :] - ax, ys[:, :, None] - ay  # (K, 1, w), (K, h, 1)
    along = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6), 0.0, 1.0)
    dist = np.sqrt((px - along * dx) ** 2 + (py - along * dy) ** 2)  # (K, h, w)
    r3 = r[:, None, None]
    alpha = np.clip(r3 + 0.5 - dist, 0.0, 1.0)
    shade = 1.0 - 0.3 * np.minimum(dist / r3, 1.0) ** 2  # rounder look: darker towards the rim
    # "over" compositing, premultiplied: pixel = pixel * (1 - alpha) + alpha * shade * colour
    paint = (alpha * shade)[..., None] * colours.reshape(-1, 1, 1, 3)
    keep = np.repeat((1.0 - alpha)[..., None], 3, axis=3)
    for k, (x0, y0) in enumerate(lo.tolist()):
        frame_part, patch_part = _crop(x0, y0, keep.shape[2], keep.shape[1], width, height)
        region = frame[frame_part]
        region *= keep[k][patch_part]
        region += paint[k][patch_part]


def _patches(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer top-left corners ``(K, 2)`` of equally sized patches covering boxes ``[lo, hi]``
    (one pixel of margin), and their pixel-centre coordinates ``xs (K, w)``, ``ys (K, h)``."""
    start = np.floor(lo).astype(np.int64) - 1
    size = (np.ceil(hi).astype(np.int64) + 1 - start).max(axis=0)
    xs = (start[:, 0, None] + np.arange(size[0])).astype(np.float32) + 0.5
    ys = (start[:, 1, None] + np.arange(size[1])).astype(np.float32) + 0.5
    return start, xs, ys


def _crop(x0: int, y0: int, w: int, h: int, width: int, height: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the frame and of a ``h x w`` patch placed at ``(x0, y0)``, cut to where they overlap
    (empty slices when they do not)."""
    fx0, fy0 = min(max(x0, 0), width), min(max(y0, 0), height)
    fx1, fy1 = max(min(x0 + w, width), fx0), max(min(y0 + h, height), fy0)
    return (slice(fy0, fy1), slice(fx0, fx1)), (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))


def _pose_capsules(tracks: Tracks, t: int, figures: Figures):
    """Capsule end points ``(N, 6, 2)`` x2, radii ``(N, 6)``, colours ``(N, 6, 3)`` and shadow ellipses ``(N, 4)``."""
    x, y, h = tracks.x[t], tracks.y[t], tracks.h_px[t]
    facing, tilt, phase, leg_amp = tracks.facing[t], tracks.tilt[t], tracks.phase[t], tracks.leg_amp[t]
    fl = tracks.flail[t]
    swing = leg_amp * np.sin(phase)
    n = len(x)
    zeros = np.zeros(n, np.float32)
    hip = np.stack([zeros, _LEG * np.cos(swing)], axis=1)  # the planted foot stays on the ground
    shoulder = hip + [0.0, _HIP_TO_SHOULDER]
    neck = hip + [0.0, _HIP_TO_NECK]
    head = hip + [0.0, _HIP_TO_HEAD]

    def limb(origin: np.ndarray, length: float, angle: np.ndarray) -> np.ndarray:
        return origin + length * np.stack([np.sin(angle), -np.cos(angle)], axis=1)

    arm_swing = 0.8 * swing
    starts = np.stack([shoulder, hip, hip, hip, head, shoulder], axis=1)  # (N, 6, 2) local
    ends = np.stack(
        [
            limb(shoulder, _ARM, arm_swing + fl[:, 1]),
            limb(hip, _LEG, -swing + fl[:, 3]),
            limb(hip, _LEG, swing + fl[:, 2]),
            neck,
            head,
            limb(shoulder, _ARM, -arm_swing + fl[:, 0]),
        ],
        axis=1,
    )

    def to_image(p: np.ndarray) -> np.ndarray:
        # Rotate by the tilt about the feet (forward = towards facing), scale, mirror, place.
        c, s = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
        u = p[..., 0] * c + p[..., 1] * s
        v = -p[..., 0] * s + p[..., 1] * c
        return np.stack([x[:, None] + facing[:, None] * u * h[:, None], y[:, None] - v * h[:, None]], axis=-1)

    shirt, trousers, skin = figures.shirt, figures.trousers, figures.skin
    colours = np.stack([0.8 * shirt, 0.8 * trousers, trousers, shirt, skin, shirt], axis=1).astype(np.float32)
    radii = _RADII[None, :] * h[:, None]
    lying = np.abs(np.sin(tilt))
    shadows = np.stack([x + facing * 0.45 * np.sin(tilt) * h, y, (0.14 + 0.42 * lying) * h, 0.045 * h], axis=1)
    f32 = np.float32
    return to_image(starts).astype(f32), to_image(ends).astype(f32), radii.astype(f32), colours, shadows.astype(f32)
