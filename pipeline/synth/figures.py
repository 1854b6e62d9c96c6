"""How the people look: clothes, skin and height, drawn once per video."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Figures"]

_SKIN = np.array([[233, 196, 160], [205, 150, 110], [160, 110, 75], [110, 72, 48], [245, 210, 180]], np.float32)


@dataclass(frozen=True)
class Figures:
    shirt: np.ndarray  # (N, 3)
    trousers: np.ndarray  # (N, 3)
    skin: np.ndarray  # (N, 3)
    size: np.ndarray  # (N,) height multiplier (people differ in height)

    @staticmethod
    def create(n: int, rng: np.random.Generator) -> Figures:
        hue = rng.uniform(0, 1, n)
        sat = rng.uniform(0.45, 0.9, n)
        val = rng.uniform(0.45, 0.95, n)
        shirt = _hsv_to_rgb(hue, sat, val) * 255
        trouser_hue = rng.choice([0.6, 0.08, 0.0, 0.33], n) + rng.normal(0, 0.02, n)
        trousers = _hsv_to_rgb(trouser_hue % 1.0, rng.uniform(0.1, 0.6, n), rng.uniform(0.15, 0.45, n)) * 255
        skin = _SKIN[rng.integers(len(_SKIN), size=n)]
        return Figures(
            shirt.astype(np.float32), trousers.astype(np.float32), skin, rng.uniform(0.88, 1.1, n).astype(np.float32)
        )


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
