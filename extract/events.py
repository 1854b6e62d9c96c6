"""The events of the video job, and the claimed video they carry (``VideoJob``).

A decoder (in a thread, a process or a Ray task) emits ``Began``, ``ClipDecoded``, ``Ended`` or
``Failed`` for a video; the claim loop emits ``Skipped``, ``Duplicate``, ``Failed`` or hands the
video on (``Claimed``, or straight to a decoder), and ``ClaimsDone`` at the end. Typed events
let every executor pass them across threads, processes and Ray tasks the same way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from .cache import CacheEntry
from .decode import VideoInfo

__all__ = [
    "VideoJob",
    "Skipped",
    "Duplicate",
    "Claimed",
    "Began",
    "ClipDecoded",
    "Ended",
    "Failed",
    "ClaimsDone",
    "Event",
    "Emit",
    "queue_emitter",
]


@dataclass
class VideoJob:
    """One claimed video on its way to the cache: what decoding found and what the network made."""

    source: Path
    stem: str
    sha256: str
    size: int
    info: VideoInfo | None = None
    lock: FileLock | None = None
    clip_starts: list[int] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)  # per clip: (n_crops, 1024)

    def add_features(self, feats: np.ndarray, n_crops: int) -> None:
        """Store a batch's (n_clips * n_crops, 1024) output, clip by clip (crops of a clip adjacent)."""
        self.feats.extend(feats[i : i + n_crops] for i in range(0, len(feats), n_crops))


@dataclass(frozen=True)
class Skipped:
    """The entry is complete and current: nothing to compute (``entry`` as verified)."""

    source: Path
    entry: CacheEntry


@dataclass(frozen=True)
class Duplicate:
    """Same content as a video this run computes already, under the same stem."""

    source: Path
    stem: str
    first: Path


@dataclass(frozen=True)
class Claimed:
    """The entry is this run's to compute: its lock is held (``job.lock``) until it is written."""

    job: VideoJob


@dataclass(frozen=True)
class Began:
    job: VideoJob
    info: VideoInfo


@dataclass(frozen=True)
class ClipDecoded:
    job: VideoJob
    start: int  # first frame of the clip
    crops: torch.Tensor  # uint8 (n_crops, 3, T, S, S)


@dataclass(frozen=True)
class Ended:
    job: VideoJob
    frame_times: np.ndarray  # float64 (n_frames,)
    damage: str | None  # the decoder's summary of damaged packets, None when clean


@dataclass(frozen=True)
class Failed:
    source: Path
    error: str


@dataclass(frozen=True)
class ClaimsDone:
    """The claim loop has handed on every video."""


Event = Skipped | Duplicate | Claimed | Began | ClipDecoded | Ended | Failed | ClaimsDone
Emit = Callable[[Event], bool]  # False: the run is stopping, stop producing


def queue_emitter(q: queue.Queue, stop: threading.Event) -> Emit:
    """``emit`` into a bounded queue, giving up (False) once the run stops."""

    def emit(event: Event) -> bool:
        while not stop.is_set():
            try:
                q.put(event, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    return emit
