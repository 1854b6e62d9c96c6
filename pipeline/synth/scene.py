"""The static scene: a textured plaza seen by a fixed camera, where feet may go, and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vadpipe.errors import ConfigError
from vadpipe.synth.config import VIEW_CROP_PX, VIEW_SHORT_SIDE_PX, SynthConfig

__all__ = ["Scene"]

_PALETTES = (  # (ground, tile line, wall) RGB
    ((150, 146, 138), (96, 92, 88), (176, 160, 140)),  # concrete plaza
    ((168, 120, 96), (110, 78, 64), (150, 150, 158)),  # brick pavers
    ((104, 106, 110), (70, 72, 76), (190, 180, 160)),  # asphalt
    ((176, 164, 132), (128, 118, 92), (120, 130, 140)),  # sandstone
)


@dataclass(frozen=True)
class Scene:
    background: np.ndarray  # (H, W, 3) float32
    noise: np.ndarray  # (K, H, W, 3) float32 sensor noise fields (grey), +0.5 for rounding
    stage: tuple[float, float, float, float]  # x0, y0, x1, y1: where feet may go
    fig_px: float  # standing figure height at the front (y = y1)

    @staticmethod
    def create(config: SynthConfig, rng: np.random.Generator) -> Scene:
        w, h = config.width, config.height
        background = _make_background(w, h, rng)
        # The region I3D's centre crop sees, in source pixels.
        scale = VIEW_SHORT_SIDE_PX / min(w, h)
        view_w, view_h = min(w, VIEW_CROP_PX / scale), min(h, VIEW_CROP_PX / scale)
        vx0, vy0 = (w - view_w) / 2, (h - view_h) / 2
        fig_px = config.figure_height * h
        # Feet stay far enough inside the view that heads and limbs do too.
        stage = (vx0 + 0.3 * fig_px, vy0 + 1.05 * fig_px, vx0 + view_w - 0.3 * fig_px, vy0 + view_h - 0.08 * fig_px)
        if stage[2] - stage[0] < fig_px or stage[3] - stage[1] < 0.5 * fig_px:
            raise ConfigError(
                f"figure_height {config.figure_height} leaves no room to walk in a {w}x{h} frame; "
                "use a smaller figure_height"
            )
        noise = np.repeat((rng.normal(0.0, 1.6, size=(4, h, w, 1)) + 0.5).astype(np.float32), 3, axis=3)
        return Scene(background=background, noise=noise, stage=stage, fig_px=fig_px)

    def scale_at(self, y: np.ndarray) -> np.ndarray:
        """Figure height in px at feet row ``y``: perspective, 70% at the back of the stage."""
        y0, y1 = self.stage[1], self.stage[3]
        return self.fig_px * (0.7 + 0.3 * np.clip((y - y0) / (y1 - y0), 0.0, 1.0))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma, mode="wrap")
    return (field / (field.std() + 1e-8)).astype(np.float32)


def _make_background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    ground, line, wall = (np.array(c, np.float32) for c in _PALETTES[int(rng.integers(len(_PALETTES)))])
    ground = ground * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    wall = wall * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    horizon = h * rng.uniform(0.1, 0.16)
    img = np.empty((h, w, 3), np.float32)

    # Ground: perspective paving (ground coordinates gx, gz from a pinhole camera), per-tile shade,
    # mortar lines anti-aliased by their width in pixels, blotches and grain.
    f = h * 0.9
    dy = np.maximum(ys - horizon, 1.0)
    gz = f / dy * 10.0
    gx = (xs - w * rng.uniform(0.4, 0.6)) * gz / f
    tile = rng.uniform(2.0, 4.0)
    u, v = gx / tile, gz / tile
    shade_table = rng.normal(0.0, 0.05, size=(17, 19)).astype(np.float32)
    tile_shade = shade_table[np.floor(v).astype(np.int64) % 17, np.floor(u).astype(np.int64) % 19]
    px_per_u = f / gz * tile  # pixels per tile unit along x
    px_per_v = dy * dy / (f * 10.0) * tile  # pixels per tile unit along y
    du = np.abs(u - np.round(u)) * px_per_u
    dv = np.abs(v - np.round(v)) * px_per_v
    mortar = np.clip(1.2 - np.minimum(du, dv), 0.0, 1.0)[..., None]
    blotch = _smooth_noise(rng, h, w, max(h, w) / 20)[..., None]
    grain = rng.normal(0.0, 1.0, (h, w, 1)).astype(np.float32)
    g = ground * (1.0 + tile_shade[..., None] + 0.06 * blotch) + 5.0 * grain
    g = g * (1 - 0.7 * mortar) + line * 0.7 * mortar
    img[:] = g

    # Facade above the horizon: wall, a row of windows, a darker base line.
    facade = ys < horizon
    win_w, win_h = w * rng.uniform(0.04, 0.07), horizon * 0.45
    pitch = win_w * rng.uniform(1.6, 2.4)
    in_window = (np.mod(xs - rng.uniform(0, pitch), pitch) < win_w) & (np.abs(ys - horizon * 0.45) < win_h / 2)
    wall_tex = wall * (1.0 + 0.04 * _smooth_noise(rng, h, w, 3.0)[..., None]) + 3.0 * grain
    window = np.array([52, 60, 72], np.float32) + 30.0 * np.clip((horizon * 0.45 - ys) / win_h + 0.5, 0, 1)[..., None]
    fac = np.where(in_window[..., None], window, wall_tex)
    fac = np.where((ys > horizon - 3)[..., None], wall * 0.55, fac)
    img = np.where(facade[..., None], fac, img)

    # Static structures on the ground: planters (boxes) and lamp posts, kept mostly at the sides.
    for _ in range(int(rng.integers(2, 5))):
        cx = w * (rng.uniform(0.02, 0.22) if rng.random() < 0.5 else rng.uniform(0.78, 0.98))
        base = rng.uniform(horizon + 0.15 * h, h * 0.98)
        s = (base - horizon) / (h - horizon)
        if rng.random() < 0.5:  # planter: box with a lighter top and some greenery
            bw, bh = w * 0.09 * s + 4, h * 0.07 * s + 3
            box = (np.abs(xs - cx) < bw / 2) & (ys > base - bh) & (ys < base)
            top = box & (ys < base - bh * 0.65)
            colour = np.array(_PALETTES[int(rng.integers(len(_PALETTES)))][2], np.float32) * 0.8
            img = np.where(box[..., None], colour, img)
            leaves = np.array([56, 104, 48], np.float32) * (1.0 + 0.25 * _smooth_noise(rng, h, w, 1.5)[..., None])
            img = np.where(top[..., None], leaves, img)
        else:  # lamp post: thin dark pole with a lamp head
            pole_h = h * 0.45 * s + 10
            pole = (np.abs(xs - cx) < max(1.0, 1.5 * s)) & (ys > base - pole_h) & (ys < base)
            lamp = (np.abs(xs - cx) < 3 + 3 * s) & (np.abs(ys - (base - pole_h)) < 1.5 + 2 * s)
            img = np.where(pole[..., None], np.float32(45), img)
            img = np.where(lamp[..., None], np.array([230, 226, 200], np.float32), img)

    # Mild vignetting, as with a cheap surveillance lens.
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
    img *= (1.0 - 0.12 * r2)[..., None]
    return np.clip(img, 0, 255).astype(np.float32)
