"""The anomalies: when one happens (:func:`sample_anomaly`) and what each kind does to the figures,
frame by frame, through the simulator's :class:`Step` (the plans in :data:`PLANS`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vadpipe.errors import ConfigError
from vadpipe.synth.config import Anomaly, SynthConfig

__all__ = ["PLANS", "Plan", "Step", "sample_anomaly"]


def sample_anomaly(n_frames: int, *, config: SynthConfig, rng: np.random.Generator, kind: str | None = None) -> Anomaly:
    """Draw an anomalous stretch covering ``config.anomaly_fraction`` of ``n_frames``, anywhere in the video.

    ``kind`` defaults to a uniform draw from ``config.anomaly_kinds``.
    """
    if n_frames < 1:
        raise ConfigError(f"n_frames must be >= 1, got {n_frames}")
    lo, hi = config.anomaly_fraction
    length = int(np.clip(round(rng.uniform(lo, hi) * n_frames), 1, n_frames))
    start = int(rng.integers(0, n_frames - length + 1))
    if kind is None:
        kind = config.anomaly_kinds[int(rng.integers(len(config.anomaly_kinds)))]
    return Anomaly(kind, start, start + length)


@dataclass
class Step:
    """The simulator's arrays for one frame, which an anomaly plan reads and overrides in place."""

    pos: np.ndarray  # (N, 2) feet positions
    target: np.ndarray  # (N, 2) current waypoints
    desired: np.ndarray  # (N, 2) wanted velocity, px/frame
    h_px: np.ndarray  # (N,) figure heights at their positions
    sprint_speed: np.ndarray  # (N,) figure heights per second
    want_tilt: np.ndarray  # (N,)
    want_flail: np.ndarray  # (N, 4)
    gait: np.ndarray  # (N,) leg swing at full speed, radians
    stride: np.ndarray  # (N,) figure heights per gait cycle
    accel: np.ndarray  # (N,) share of the velocity difference closed per frame
    pinned: np.ndarray  # (N,) bool: position set directly in new_pos instead of by velocity
    new_pos: np.ndarray  # (N, 2)
    facing: np.ndarray  # (N,)
    fps: float
    stage_lo: np.ndarray
    stage_hi: np.ndarray
    rng: np.random.Generator

    def random_points(self, k: int) -> np.ndarray:
        return self.stage_lo + self.rng.uniform(size=(k, 2)) * (self.stage_hi - self.stage_lo)

    def sprint_to(self, idx: np.ndarray, goal: np.ndarray) -> None:
        """Figures ``idx`` run flat out towards ``goal`` ``(len(idx), 2)``, leaning forward."""
        d = goal - self.pos[idx]
        dist = np.linalg.norm(d, axis=1)
        speed = np.minimum(self.sprint_speed[idx] * self.h_px[idx] / self.fps, dist)
        self.desired[idx] = d / (dist[:, None] + 1e-9) * speed[:, None]
        self.gait[idx], self.stride[idx], self.accel[idx] = 0.85, 1.4, 0.45
        self.want_tilt[idx] = 0.25

    def thrash(self, idx: np.ndarray, strength: float) -> None:
        """Random, fast-changing limb angles: flailing arms, kicking legs."""
        arms = self.rng.uniform(-2.8, 2.8, (len(idx), 2))
        legs = self.rng.uniform(-1.1, 1.1, (len(idx), 2))
        self.want_flail[idx] = strength * np.concatenate([arms, legs], axis=1)


class Plan:
    """What one anomaly kind does to the figures, frame by frame inside ``[start, end)``."""

    tilt_rate = 0.5  # how fast body tilt follows its target
    participants: np.ndarray  # indices of the figures the anomaly takes over

    def step(self, rel: int, length: int, s: Step) -> None:
        raise NotImplementedError


class _RunPlan(Plan):
    """Half or more of the people sprint, zig-zagging to a new random spot every 0.25-0.6 s."""

    def __init__(self, pos: np.ndarray, s: Step) -> None:
        n = len(pos)
        self.idx = np.sort(s.rng.choice(n, int(s.rng.integers(max(2, math.ceil(n / 2)), n + 1)), replace=False))
        self.participants = self.idx
        self.goal = np.zeros((len(self.idx), 2))
        self.retarget = np.zeros(len(self.idx), int)

    def step(self, rel: int, length: int, s: Step) -> None:
        due = self.retarget <= rel
        if due.any():
            self.goal[due] = s.random_points(int(due.sum()))
            self.retarget[due] = rel + s.rng.integers(int(0.25 * s.fps), int(0.6 * s.fps) + 1, int(due.sum()))
        s.sprint_to(self.idx, self.goal)
        s.target[self.idx] = self.goal  # afterwards they walk on from where they were heading
        s.want_flail[self.idx, :2] = s.rng.uniform(-0.6, 0.6, (len(self.idx), 2))


class _ScatterPlan(Plan):
    """Everyone flees a point in panic, arms raised, changing course every 0.4-0.9 s."""

    def __init__(self, pos: np.ndarray, s: Step) -> None:
        lo, hi = s.stage_lo, s.stage_hi
        self.centre = lo + (hi - lo) * np.array([s.rng.uniform(0.3, 0.7), s.rng.uniform(0.0, 1.0)])
        self.idx = self.participants = np.arange(len(pos))
        self.goal = np.zeros((len(pos), 2))
        self.retarget = np.zeros(len(pos), int)

    def step(self, rel: int, length: int, s: Step) -> None:
        due = self.retarget <= rel
        if due.any():
            # Of a few random spots, run for the one farthest from the source of panic.
            cand = s.random_points(6 * int(due.sum())).reshape(-1, 6, 2)
            far = np.argmax(np.linalg.norm(cand - self.centre, axis=2), axis=1)
            self.goal[due] = cand[np.arange(len(cand)), far]
            self.retarget[due] = rel + s.rng.integers(int(0.4 * s.fps), int(0.9 * s.fps) + 1, int(due.sum()))
        s.sprint_to(self.idx, self.goal)
        s.target[self.idx] = self.goal
        s.thrash(self.idx, 0.4)
        s.want_flail[self.idx, :2] += np.array([2.5, -2.5])


class _FightPlan(Plan):
    """The closest two or three people rush together and brawl: circling, lunges, shoves, thrashing."""

    tilt_rate = 0.7

    def __init__(self, pos: np.ndarray, s: Step) -> None:
        n = len(pos)
        d = np.linalg.norm(pos[:, None] - pos[None], axis=2) + np.eye(n) * 1e9
        a, b = (int(i) for i in np.unravel_index(np.argmin(d), d.shape))
        fighters = [a, b]
        if n >= 4 and s.rng.random() < 0.6:
            fighters.append(next(int(i) for i in np.argsort(d[a] + d[b]) if i not in fighters))
        self.idx = np.array(fighters)
        margin = np.array([0.5, 0.1]) * s.h_px.max()
        self.meet = np.clip(pos[self.idx].mean(axis=0), s.stage_lo + margin, s.stage_hi - margin)
        k = len(fighters)
        self.angle0 = s.rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(k) / k
        self.spin = s.rng.choice([-1.0, 1.0]) * s.rng.uniform(1.5, 3.0)  # circling, radians per second
        self.freq = s.rng.uniform(2.0, 4.0, k)  # lunges per second
        self.lunge_phase = s.rng.uniform(0, 2 * np.pi, k)
        self.engaged = np.zeros(k, bool)
        self.watchers = np.array([i for i in range(n) if i not in fighters and s.rng.random() < 0.5], int)
        self.participants = np.concatenate([self.idx, self.watchers])

    def step(self, rel: int, length: int, s: Step) -> None:
        h = s.h_px[self.idx]
        seconds = rel / s.fps
        angles = self.angle0 + self.spin * seconds
        slot_dir = np.stack([np.cos(angles), 0.4 * np.sin(angles)], axis=1)
        slot = self.meet + slot_dir * (0.28 * h)[:, None]
        self.engaged |= np.linalg.norm(s.pos[self.idx] - slot, axis=1) < 0.25 * h
        e = self.engaged
        if (~e).any():
            s.sprint_to(self.idx[~e], slot[~e])
        if e.any():
            fi = self.idx[e]
            swing = np.sin(2 * np.pi * self.freq[e] * seconds + self.lunge_phase[e])
            lunge = -slot_dir[e] * (0.22 * h[e] * swing)[:, None]
            shove = s.rng.normal(0.0, 0.07, (len(fi), 2)) * h[e][:, None]
            s.new_pos[fi] = slot[e] + lunge + shove
            s.pinned[fi] = True
            s.facing[fi] = np.where(self.meet[0] >= slot[e][:, 0], 1.0, -1.0)
            s.thrash(fi, 1.0)
            s.want_tilt[fi] = s.rng.uniform(-0.5, 0.6, len(fi))
            s.gait[fi], s.stride[fi] = 0.8, 0.3  # short, stamping steps
            s.target[fi] = s.pos[fi]
        if len(self.watchers):  # some bystanders stop and stare
            s.desired[self.watchers] = 0.0


class _FallPlan(Plan):
    """Someone topples over, writhes on the ground and gets up; the nearest people rush over and
    crouch around them, waving for help."""

    tilt_rate = 1.0

    def __init__(self, pos: np.ndarray, s: Step) -> None:
        n = len(pos)
        self.faller = int(s.rng.integers(n))
        d = np.linalg.norm(pos - pos[self.faller], axis=1)
        d[self.faller] = np.inf
        self.helpers = np.argsort(d)[: min(int(s.rng.integers(2, 4)), n - 1)]
        self.participants = np.concatenate([[self.faller], self.helpers])
        side = np.where(np.arange(len(self.helpers)) % 2 == 0, 1.0, -1.0)
        self.helper_offset = np.stack([side * 0.55, np.linspace(-0.1, 0.1, len(self.helpers))], axis=1)
        # Topple towards the middle of the stage, so the body stays inside the view I3D sees.
        self.facing = 1.0 if pos[self.faller, 0] < (s.stage_lo[0] + s.stage_hi[0]) / 2 else -1.0

    def step(self, rel: int, length: int, s: Step) -> None:
        fall = max(1, min(int(0.4 * s.fps), length // 3))  # frames to hit the ground
        rise = max(1, min(int(0.6 * s.fps), length // 4))  # frames to get up again
        f = np.array([self.faller])
        s.desired[f] = 0.0
        s.accel[f] = 0.3
        s.facing[f] = self.facing
        s.gait[f] = 0.0
        if rel < fall:  # accelerating rotation, like a toppling body
            angle = 0.5 * np.pi * ((rel + 1) / fall) ** 2
        elif rel < length - rise:  # on the ground, writhing and rolling
            angle = 0.5 * np.pi + s.rng.normal(0.0, 0.12)
            s.thrash(f, 1.0)
            roll = s.rng.normal(0.0, 0.05, 2) * [1.0, 0.3] * s.h_px[self.faller]
            s.new_pos[f] = np.clip(s.pos[f] + roll, s.stage_lo, s.stage_hi)
            s.pinned[f] = True
        else:  # getting up
            angle = 0.5 * np.pi * (1.0 - (rel - (length - rise) + 1) / rise)
        s.want_tilt[f] = angle
        if rel >= fall:
            goal = s.pos[self.faller] + self.helper_offset * s.h_px[self.helpers][:, None]
            goal = np.clip(goal, s.stage_lo, s.stage_hi)
            far = np.linalg.norm(s.pos[self.helpers] - goal, axis=1) > 0.15 * s.h_px[self.helpers]
            if far.any():
                s.sprint_to(self.helpers[far], goal[far])
            near = self.helpers[~far]
            if len(near):  # bend over the fallen body, arms waving
                body_x = s.pos[self.faller, 0] + self.facing * 0.45 * s.h_px[self.faller]
                s.facing[near] = np.where(body_x >= s.pos[near, 0], 1.0, -1.0)
                s.desired[near] = 0.0
                s.want_tilt[near] = s.rng.uniform(0.3, 0.8, len(near))
                s.thrash(near, 0.8)
            s.target[self.helpers] = s.pos[self.helpers]


PLANS: dict[str, Callable[[np.ndarray, Step], Plan]] = {
    "run": _RunPlan,
    "fall": _FallPlan,
    "fight": _FightPlan,
    "scatter": _ScatterPlan,
}
