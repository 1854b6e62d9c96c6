"""The one video job every executor runs, and the one report collector.

A video's job: name its cache entry (content hash -> stem), claim it (per-stem file lock; skip it
when the entry is complete and current), decode it, cut and crop 16-frame clips, encode them in
batches, write the entry. Executors (``runner``: a decode thread; ``workers``: decode processes;
``devices``: one process per device; ``ray_engine``: Ray tasks and actors) only decide *where*
decoding and encoding run; every step above, the events between the steps, the batch rule and
the report are defined here once, so the cache they write is the same, byte for byte on CPU.

Events are typed: a decoder (in a thread, a process or a Ray task) emits ``Began``,
``ClipDecoded``, ``Ended`` or ``Failed`` for a video; the claim loop emits ``Skipped``,
``Duplicate``, ``Failed`` or hands the video on (``Claimed``, or straight to a decoder), and
``ClaimsDone`` at the end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from vadpipe._version import __version__
from vadpipe.errors import CacheError, ConfigError, VadpipeError

from . import cache
from .decode import VIDEO_EXTENSIONS, Frame, VideoInfo, open_frames
from .fileio import check_writable, remove_stale_temps, sha256_file
from .i3d import FEATURE_DIM
from .settings import ExtractionSettings
from .transforms import crop_clip, resize_frame

__all__ = [
    "VideoResult",
    "ExtractReport",
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
    "find_videos",
    "discover_inputs",
    "open_report",
    "clips_per_batch",
    "cut_clips",
    "decode_video",
    "guarded",
    "failure_message",
    "EntryNamer",
    "claim_entry",
    "HeldLocks",
    "claim_videos",
    "queue_emitter",
    "video_record",
    "write_video",
    "Collector",
    "LOCK_DIR",
]


# --------------------------------------------------------------------------- results


@dataclass
class VideoResult:
    """Outcome for one input: ok, partial (damaged but decoded), zero_clips, skipped or failed."""

    source: str
    status: str
    stem: str | None = None
    clips: int = 0
    error: str | None = None
    note: str | None = None


@dataclass
class ExtractReport:
    """One run's results; the timings tell how well the network was fed (bench/extract.py).

    ``loop_s``: wall time of the compute loop; ``network_s``: time in the network (averaged over
    the network actors on Ray); ``input_wait_s``: time the network waited for clips (on Ray:
    its idle time). Summed over devices with one process per device.
    """

    out_dir: str
    settings_key: str
    results: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    network_s: float = 0.0
    input_wait_s: float = 0.0
    loop_s: float = 0.0

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def clips_computed(self) -> int:
        return sum(r.clips for r in self.results if r.status in ("ok", "partial"))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def input_wait_share(self) -> float:
        """Share of the compute loop the network spent waiting for input (0 when nothing ran)."""
        return self.input_wait_s / self.loop_s if self.loop_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "settings_key": self.settings_key,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "clips_computed": self.clips_computed,
            "timing": {
                "loop_s": round(self.loop_s, 3),
                "network_s": round(self.network_s, 3),
                "input_wait_s": round(self.input_wait_s, 3),
            },
            "results": [asdict(r) for r in self.results],
        }


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


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Skipped:
    """The entry is complete and current: nothing to compute."""

    source: Path
    stem: str
    clips: int


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


# --------------------------------------------------------------------------- inputs and report


def find_videos(inputs: Sequence[Path]) -> tuple[list[Path], list[VideoResult]]:
    """Files as given, folders searched recursively for video extensions; missing paths as failures."""
    found: dict[Path, None] = {}
    missing = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."):
                    found.setdefault(p.resolve(), None)
        elif path.is_file():
            found.setdefault(path.resolve(), None)
        else:
            missing.append(VideoResult(source=str(path), status="failed", error=f"{path}: no such file or folder"))
    return sorted(found), missing


def discover_inputs(inputs: Iterable[Path], out_dir: Path) -> tuple[list[Path], list[VideoResult]]:
    """A run's first step: the videos to do, the missing inputs, and a writable cache.

    The cache folder is checked before any network is loaded, so an unwritable one fails at once.
    """
    inputs = list(inputs)
    sources, missing = find_videos(inputs)
    if not sources and not missing:
        raise ConfigError(
            f"no video files found in {_few_paths(inputs)} (looked for {', '.join(sorted(VIDEO_EXTENSIONS)[:6])}, ...)"
        )
    _prepare_out_dir(Path(out_dir))
    return sources, missing


def open_report(
    out_dir: Path,
    settings: ExtractionSettings,
    missing: list[VideoResult],
    *,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """A run's second step, once the weights are known: clean up after killed runs and start the
    report with the missing inputs (also logged to failures.jsonl)."""
    remove_stale_temps(out_dir)
    report = ExtractReport(out_dir=str(out_dir), settings_key=settings.key(), results=list(missing))
    for r in missing:
        cache.append_failure(out_dir, Path(r.source), r.error or "failed")
        if on_result:
            on_result(r)
    return report


def _few_paths(paths: Sequence[Path], limit: int = 3) -> str:
    names = [str(p) for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the cache folder and prove it is writable (one clear error instead of one per video)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_writable(out_dir)
    except OSError as exc:
        raise CacheError(f"cannot write into the output folder {out_dir}: {exc.strerror or exc}") from exc


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


def decode_video(job: VideoJob, settings: ExtractionSettings, emit: Emit, stop: threading.Event) -> bool:
    """Decode one video into ``Began``, ``ClipDecoded``... and ``Ended`` events; False when stopped.

    Raises (VadpipeError, OSError...) for a video that cannot be decoded: see ``guarded``.
    """
    opener = open_frames(job.source, backend=settings.decoder, fps=settings.fps)
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


# --------------------------------------------------------------------------- claiming entries

LOCK_DIR = ".locks"


def _entry_lock(out_dir: Path, stem: str) -> FileLock:
    # thread_local=False: the claiming thread takes the lock, the writing thread releases it
    return FileLock(Path(out_dir) / LOCK_DIR / f"{stem}.lock", thread_local=False)


def claim_entry(
    out_dir: Path, stem: str, *, source_sha256: str, settings: ExtractionSettings, wait: bool
) -> FileLock | cache.CacheRecord | None:
    """Lock a video's cache entry: the held lock when it must be computed; the record (lock
    released) when it is complete and current; None when another process holds it and ``wait``
    is False. The lock keeps two processes sharing a cache from computing one video twice."""
    lock = _entry_lock(out_dir, stem)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    try:
        record = cache.reusable_record(out_dir, stem, source_sha256=source_sha256, settings_key=settings.key())
    except BaseException:
        lock.release()
        raise
    if record is not None:
        lock.release()
        return record
    return lock


class HeldLocks:
    """The entry locks a run holds, released once each (by the writer, or all at the end)."""

    def __init__(self) -> None:
        self._locks: list[FileLock] = []
        self._guard = threading.Lock()

    def add(self, lock: FileLock) -> None:
        with self._guard:
            self._locks.append(lock)

    def release(self, lock: FileLock | None) -> None:
        with self._guard:
            if lock is None or lock not in self._locks:
                return
            self._locks.remove(lock)
        lock.release()

    def release_all(self) -> None:
        for lock in list(self._locks):
            self.release(lock)


class EntryNamer:
    """Cache names in input order (``StemAssigner``) and the videos this run computes, by stem."""

    def __init__(self, out_dir: Path) -> None:
        self._assigner = cache.StemAssigner(out_dir)
        self._computing: dict[str, Path] = {}  # stem -> first source computed under it in this run

    def name(self, source: Path, sha256: str) -> str | Duplicate:
        """The video's stem, or ``Duplicate`` when this run computes the same content already."""
        stem = self._assigner.assign(source, sha256)
        if stem in self._computing:
            return Duplicate(source, stem, self._computing[stem])
        return stem

    def computing(self, stem: str, source: Path) -> None:
        self._computing[stem] = source


Decode = Callable[[VideoJob, ExtractionSettings, Emit, threading.Event], bool]


def claim_videos(
    sources: Sequence[Path],
    *,
    out_dir: Path,
    settings: ExtractionSettings,
    emit: Emit,
    stop: threading.Event,
    locks: HeldLocks,
    decode: Decode,
) -> None:
    """Name, claim and hand on every video in order (a thread's body), then ``ClaimsDone``.

    ``decode(job, settings, emit, stop) -> handed over`` takes a claimed video: ``decode_video``
    decodes it here, an executor with decode processes emits ``Claimed`` instead. A handed-over
    job's lock is released by whoever writes its entry. A video locked by another process is
    deferred to the end of the list, then waited for (and usually found done).
    """
    namer = EntryNamer(out_dir)

    def one(source: Path, wait: bool) -> bool | None:
        """Emit the events of one video; False = stopped, None = deferred (locked elsewhere)."""
        sha = sha256_file(source)
        named = namer.name(source, sha)
        if isinstance(named, Duplicate):
            return emit(named)
        claim = claim_entry(out_dir, named, source_sha256=sha, settings=settings, wait=wait)
        if claim is None:
            return None
        if isinstance(claim, cache.CacheRecord):
            return emit(Skipped(source, named, claim.clips.count))
        locks.add(claim)
        handed_over = False
        try:
            job = VideoJob(source=source, stem=named, sha256=sha, size=source.stat().st_size, lock=claim)
            namer.computing(named, source)
            handed_over = decode(job, settings, emit, stop)
            return handed_over
        finally:
            if not handed_over:
                locks.release(claim)

    try:
        deferred = []
        for source in sources:
            if stop.is_set():
                return
            if guarded(source, emit, one, source, False) is None:
                deferred.append(source)
        for source in deferred:
            if stop.is_set():
                return
            guarded(source, emit, one, source, True)
    finally:
        emit(ClaimsDone())


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
        cache.write_entry(out_dir, record, [stacked[:, c] for c in range(n_crops)], times)
    except CacheError as exc:
        raise CacheError(f"{exc}; stopped (finished videos are kept: run the same command again to resume)") from exc
    return VideoResult(str(job.source), record.status, job.stem, record.clips.count, damage)


# --------------------------------------------------------------------------- the report collector


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


class Collector:
    """The one report collector of a run: each video's result (put in input order at the end),
    its line in failures.jsonl, the ``on_result`` callback and the progress bar.

    Executors pass it results (``add``) and the events they do not handle themselves (``take``);
    a sequence number per video orders the report as the videos were claimed.
    """

    def __init__(
        self,
        report: ExtractReport,
        *,
        out_dir: Path,
        total: int,
        progress: bool,
        on_result: Callable[[VideoResult], None] | None,
    ) -> None:
        self.report = report
        self.out_dir = Path(out_dir)
        self.on_result = on_result
        self._done: dict[int, VideoResult] = {}
        self._bar = _progress(progress)
        self._videos = self._bar.add_task("videos", total=total, rate="")
        self._clips: Any = None
        self._clip_count = 0
        self._clock = time.perf_counter()

    def __enter__(self) -> Collector:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)
        self.report.results.extend(self._done[s] for s in sorted(self._done))

    def add(self, seq: int, result: VideoResult, *, logged: bool = False) -> None:
        """A video's result; a failure goes to failures.jsonl unless its process ``logged`` it."""
        self._done[seq] = result
        if result.status == "failed" and not logged:
            cache.append_failure(self.out_dir, Path(result.source), result.error or "failed")
        if self.on_result:
            self.on_result(result)
        self._bar.advance(self._videos)

    def has(self, seq: int) -> bool:
        return seq in self._done

    def take(self, seq: int, event: Skipped | Duplicate | Failed) -> None:
        """The result a claim-loop or decoder event stands for."""
        if isinstance(event, Skipped):
            self.add(seq, VideoResult(str(event.source), "skipped", event.stem, event.clips))
        elif isinstance(event, Duplicate):
            self.add(seq, VideoResult(str(event.source), "skipped", event.stem, note=f"same content as {event.first}"))
        else:
            self.add(seq, VideoResult(str(event.source), "failed", error=event.error))

    def began(self, source: Path) -> None:
        self._bar.update(self._videos, description=f"videos [dim]{Path(source).name[:40]}[/]")

    def clip(self) -> None:
        """One more clip decoded (the clips/s figure of the bar)."""
        if self._clips is None:
            self._clips = self._bar.add_task("clips", total=None, rate="")
            self._clock = time.perf_counter()
        self._clip_count += 1
        rate = self._clip_count / max(time.perf_counter() - self._clock, 1e-9)
        self._bar.update(self._clips, advance=1, rate=f"{rate:.2f} clips/s")
