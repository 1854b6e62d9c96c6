"""The one video job every executor runs: decode a claimed video into clips, write its entry.

A video's job: name its cache entry (content hash -> stem), claim it (``claims``: per-stem file
lock; skip it when the entry is complete and current), decode it, cut and crop 16-frame clips,
encode them in batches, write the entry. Executors (``runner``: a decode thread; ``workers``:
decode processes; ``devices``: one process per device; ``ray_engine``: Ray tasks and actors) only
decide *where* decoding and encoding run; every step above, the events between the steps
(``events``), the batch rule and the report (``collector``) are defined once, so the cache they
write is the same, byte for byte on CPU.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadpipe._version import __version__
from vadpipe.errors import CacheError, VadpipeError

from . import cache
from .decode import Frame, open_frames
from .events import Began, ClipDecoded, Emit, Ended, Failed, VideoJob
from .i3d import FEATURE_DIM
from .results import VideoResult
from .settings import ExtractionSettings
from .transforms import crop_clip, resize_frame

__all__ = [
    "clips_per_batch",
    "cut_clips",
    "decode_video",
    "guarded",
    "failure_message",
    "video_record",
    "write_video",
]


# --------------------------------------------------------------------------- decode -> clips


def clips_per_batch(batch_size: int, n_crops: int) -> int:
    """Clips in one forward pass of ``batch_size`` crops: a video's clips are cut into batches of
    this many (the rest at its end), by every executor, so the network sees the same batches."""
    return -(-batch_size // n_crops)


def cut_clips(
    frames: Iterable[Frame], settings: ExtractionSettings, times: list[float], stop: threading.Event | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start frame, uint8 crops (n_crops, 3, T, S, S)) of every whole clip of a frame stream.

    Appends every frame's time to ``times`` (frames between clips included); with
    ``settings.drop_last_frame`` a clip is only given once a frame follows it; stops early when
    ``stop`` is set. The one definition of how frames become clips, for files and live streams.
    """
    window: deque = deque(maxlen=settings.clip_len)
    next_start = 0
    held = None  # drop_last_frame: a clip waits for the next frame (it must not end on the video's last)
    for frame in frames:
        if stop is not None and stop.is_set():
            return
        times.append(frame.time_s)
        if held is not None:
            yield held
            held = None
        if frame.index < next_start:
            continue  # stride > clip_len: frame between clips
        window.append(resize_frame(frame.rgb, settings.resize_short))
        if frame.index == next_start + settings.clip_len - 1:
            clip = (next_start, crop_clip(torch.stack(list(window)), settings.crop_size, settings.crops))
            if settings.drop_last_frame:
                held = clip
            else:
                yield clip
            next_start += settings.stride


def decode_video(
    job: VideoJob, settings: ExtractionSettings, emit: Emit, stop: threading.Event, threads: int | None = None
) -> bool:
    """Decode one video into ``Began``, ``ClipDecoded``... and ``Ended`` events; False when stopped.

    ``threads``: the decoder's threads (``open_frames``; None: automatic).

    Raises (VadpipeError, OSError...) for a video that cannot be decoded: see ``guarded``.
    """
    opener = open_frames(job.source, backend=settings.decoder, fps=settings.fps, threads=threads)
    times: list[float] = []
    with opener as (info, frames):
        job.info = info
        if not emit(Began(job, info)):
            return False
        for start, crops in cut_clips(frames, settings, times, stop):
            if not emit(ClipDecoded(job, start, crops)):
                return False
        if stop.is_set():
            return False
    if not times:
        raise VadpipeError(f"{job.source}: no decodable video frames" + _damage(opener.log.summary))
    return emit(Ended(job, np.asarray(times, dtype=np.float64), opener.log.summary))


def _damage(summary: str | None) -> str:
    return f" ({summary})" if summary else ""


def failure_message(source: Path, exc: Exception) -> str:
    """The one line a failed video gets in the report and in failures.jsonl."""
    if isinstance(exc, VadpipeError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{source}: {exc.strerror or exc}"
    return f"{source}: unexpected {type(exc).__name__}: {exc}"


def guarded(source: Path, emit: Emit, step: Callable[..., Any], *args: Any) -> Any:
    """Run one video's ``step(*args)``, turning any error into a ``Failed`` event (one video never
    stops a batch: a decoder bug on one file included)."""
    try:
        return step(*args)
    except Exception as exc:
        return emit(Failed(source, failure_message(source, exc)))


# --------------------------------------------------------------------------- writing the entry


def video_record(
    job: VideoJob, settings: ExtractionSettings, times: np.ndarray, damage: str | None
) -> cache.CacheRecord:
    """The record of a decoded and encoded video (before ``write_entry`` adds its files)."""
    n = len(times)
    info = job.info
    step = (
        float(times[-1] - times[-2])
        if n > 1
        else (1.0 / settings.fps if settings.fps else (1.0 / info.fps if info.fps else 0.0))
    )
    duration = float(times[-1] + step)
    L = settings.clip_len
    starts = tuple(job.clip_starts)
    count = len(starts)
    status = "zero_clips" if count == 0 else ("partial" if damage else "ok")
    return cache.CacheRecord(
        schema_version=cache.SCHEMA_VERSION,
        stem=job.stem,
        source=cache.SourceInfo(path=str(job.source), size=job.size, sha256=job.sha256),
        video=cache.VideoMeta(
            fps=float(settings.fps or info.fps),
            native_fps=info.fps,
            n_frames=n,
            duration_s=duration,
            width=info.width,
            height=info.height,
            rotation=info.rotation,
            codec=info.codec,
        ),
        clips=cache.ClipGeometry(
            length=L,
            stride=settings.stride,
            count=count,
            start_frames=starts,
            start_s=tuple(float(times[s]) for s in starts),
            end_s=tuple(float(times[s + L]) if s + L < n else duration for s in starts),
        ),
        crops=tuple(settings.crop_names),
        extractor=cache.ExtractorInfo(
            settings=settings.to_dict(),
            settings_key=settings.key(),
            weights_sha256=settings.weights_sha256,
            vadpipe_version=__version__,
        ),
        status=status,
        error=damage,
    )


def write_video(
    job: VideoJob, settings: ExtractionSettings, times: np.ndarray, damage: str | None, out_dir: Path
) -> VideoResult:
    """Write one video's cache entry. A write error (disk full, read-only, permissions) is raised:
    it is not about this video, and every later video would fail the same way after its compute."""
    n_crops = len(settings.crop_names)
    if job.feats:
        stacked = np.stack(job.feats)  # (T, n_crops, 1024)
    else:
        stacked = np.zeros((0, n_crops, FEATURE_DIM), dtype=np.float32)
    record = video_record(job, settings, times, damage)
    try:
        record = cache.write_entry(out_dir, record, [stacked[:, c] for c in range(n_crops)], times)
    except CacheError as exc:
        raise CacheError(f"{exc}; stopped (finished videos are kept: run the same command again to resume)") from exc
    entry = cache.CacheEntry(record, np.asarray(times, dtype=np.float64))
    return VideoResult(str(job.source), record.status, job.stem, record.clips.count, damage, entry=entry)
