"""Motion: figures walking between waypoints, pausing, and taken over by an anomaly's plan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vadpipe.synth.anomalies import PLANS, Plan, Step
from vadpipe.synth.config import Anomaly, SynthConfig
from vadpipe.synth.scene import Scene

__all__ = ["Tracks", "simulate"]


@dataclass(frozen=True)
class Tracks:
    """Per frame and figure (arrays ``(T, N)``): feet position, size and pose parameters."""

    x: np.ndarray
    y: np.ndarray
    h_px: np.ndarray  # standing height in pixels (perspective x personal size)
    facing: np.ndarray  # +1 right, -1 left
    tilt: np.ndarray  # body rotation about the feet, radians, positive = towards facing
    phase: np.ndarray  # gait phase, radians
    leg_amp: np.ndarray  # leg swing amplitude, radians
    flail: np.ndarray  # (T, N, 4) extra angles: near arm, far arm, near leg, far leg
    light: np.ndarray  # (T,) global brightness (clouds, auto-exposure)


def simulate(
    n_frames: int,
    n: int,
    anomaly: Anomaly | None,
    scene: Scene,
    config: SynthConfig,
    sizes: np.ndarray,
    rng: np.random.Generator,
) -> Tracks:
    """Walk the figures between random waypoints, pausing now and then; inside the anomaly a plan
    overrides some of them.

    Speeds are in figure heights per second (walking 0.5-0.85, i.e. about 1-1.5 m/s; sprinting
    3-4.5), turned into pixels per frame with the perspective scale at each figure's position.
    """
    fps = float(config.fps)
    lo, hi = np.array(scene.stage[:2]), np.array(scene.stage[2:])

    def random_points(k: int) -> np.ndarray:
        return lo + rng.uniform(size=(k, 2)) * (hi - lo)

    def heights(p: np.ndarray) -> np.ndarray:
        return scene.scale_at(p[:, 1]) * sizes

    pos = random_points(n)
    target = random_points(n)
    walk_speed = rng.uniform(0.5, 0.85, n)
    sprint_speed = rng.uniform(3.0, 4.5, n)
    heading = (target - pos) / (np.linalg.norm(target - pos, axis=1, keepdims=True) + 1e-9)
    vel = heading * (walk_speed * heights(pos) / fps * rng.uniform(0.3, 1.0, n))[:, None]
    pause = _initial_pause(n, fps, rng)
    phase = rng.uniform(0, 2 * np.pi, n)
    facing = np.where(vel[:, 0] >= 0, 1.0, -1.0)
    tilt = np.zeros(n)
    flail = np.zeros((n, 4))
    leg_amp = np.full(n, 0.3)

    out = {k: np.empty((n_frames, n), np.float32) for k in ("x", "y", "h_px", "facing", "tilt", "phase", "leg_amp")}
    out_flail = np.empty((n_frames, n, 4), np.float32)
    plan: Plan | None = None

    for t in range(n_frames):
        h_px = heights(pos)
        # Normal behaviour: walk to a waypoint, sometimes pause there, pick the next one.
        reached = np.linalg.norm(target - pos, axis=1) < 0.25 * h_px
        if reached.any():
            target[reached] = random_points(int(reached.sum()))
            stop = reached & (rng.random(n) < 0.3)
            pause[stop] = rng.integers(int(0.5 * fps), int(2.5 * fps) + 1, int(stop.sum()))
        walking = pause <= 0
        pause = np.maximum(pause - 1, 0)
        heading = (target - pos) / (np.linalg.norm(target - pos, axis=1, keepdims=True) + 1e-9)
        s = Step(
            pos=pos,
            target=target,
            desired=heading * (np.where(walking, walk_speed, 0.0) * h_px / fps)[:, None],
            h_px=h_px,
            sprint_speed=sprint_speed,
            want_tilt=np.zeros(n),
            want_flail=np.zeros((n, 4)),
            gait=np.full(n, 0.45),
            stride=np.full(n, 0.85),
            accel=np.full(n, 0.12),
            pinned=np.zeros(n, bool),
            new_pos=pos.copy(),
            facing=facing,
            fps=fps,
            stage_lo=lo,
            stage_hi=hi,
            rng=rng,
        )
        tilt_rate = 0.5
        if anomaly is not None and anomaly.start_frame <= t < anomaly.end_frame:
            if plan is None:  # planned on the anomaly's first frame, from where everyone is then
                plan = PLANS[anomaly.kind](pos, s)
            plan.step(t - anomaly.start_frame, anomaly.end_frame - anomaly.start_frame, s)
            tilt_rate = plan.tilt_rate
            if t == anomaly.end_frame - 1:
                # Afterwards everyone involved walks on to fresh waypoints, pausing as often as at
                # the start of a video, so that the aftermath looks normal and not like a stand-still.
                p = plan.participants
                target[p] = random_points(len(p))
                pause[p] = _initial_pause(len(p), fps, rng)

        # Move: accelerate towards the wanted velocity (brake harder, so anomalies end crisply).
        braking = np.linalg.norm(s.desired, axis=1) < np.linalg.norm(vel, axis=1)
        k = np.where(braking, np.maximum(s.accel, 0.35), s.accel)[:, None]
        vel = vel + k * (s.desired - vel)
        new_pos = np.clip(np.where(s.pinned[:, None], s.new_pos, pos + vel), lo, hi)
        moved = new_pos - pos
        vel = np.where(s.pinned[:, None], moved, vel)
        pos = new_pos
        step = np.linalg.norm(moved, axis=1)
        phase = phase + 2 * np.pi * step / (s.stride * h_px)
        speed_share = np.clip(step / (walk_speed * h_px / fps), 0.0, 1.0)
        leg_amp += 0.5 * (s.gait * speed_share - leg_amp)
        facing = np.where((np.abs(moved[:, 0]) > 0.15) & ~s.pinned, np.sign(moved[:, 0]), s.facing)
        tilt += tilt_rate * (s.want_tilt - tilt)
        flail += 0.55 * (s.want_flail - flail)

        out["x"][t], out["y"][t], out["h_px"][t] = pos[:, 0], pos[:, 1], h_px
        out["facing"][t], out["tilt"][t], out["phase"][t], out["leg_amp"][t] = facing, tilt, phase, leg_amp
        out_flail[t] = flail

    light_phase, light_period = rng.uniform(0, 2 * np.pi), rng.uniform(6, 14) * fps
    light = 1.0 + rng.uniform(0.0, 0.04) * np.sin(light_phase + 2 * np.pi * np.arange(n_frames) / light_period)
    return Tracks(flail=out_flail, light=light.astype(np.float32), **out)


def _initial_pause(n: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Frames each of ``n`` figures still stands before walking: a quarter stand for up to 2 s."""
    return np.where(rng.random(n) < 0.25, rng.integers(1, int(2 * fps) + 1, n), 0)
