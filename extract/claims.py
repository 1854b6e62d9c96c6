"""Naming and claiming cache entries: which stem a video gets, and who computes it.

A video's entry is named by content (``StemAssigner``: the plain stem unless another video holds
it), then claimed under a per-stem file lock, so two processes sharing a cache never compute one
video twice, and a complete, current entry is skipped with its record and frame times as verified.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from vadpipe.errors import CacheError

from . import cache
from .events import ClaimsDone, Duplicate, Emit, Skipped, VideoJob
from .fileio import sha256_file
from .job import guarded
from .settings import ExtractionSettings

__all__ = ["LOCK_DIR", "StemAssigner", "claim_entry", "HeldLocks", "EntryNamer", "Decode", "claim_videos"]

LOCK_DIR = ".locks"


class StemAssigner:
    """Deterministic file stems: the plain stem unless another video already holds it.

    A video keeps the plain stem when the cache has no record under it, or the record is of the
    same content; otherwise it gets ``<stem>-<first 8 hex of its sha256>``.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._claimed: dict[str, str] = {}

    def assign(self, source: Path, content_sha256: str) -> str:
        stem = Path(source).stem
        for candidate in (stem, f"{stem}-{content_sha256[:8]}"):
            owner = self._claimed.get(candidate)
            if owner is None:
                try:
                    rec = cache.read_record(cache.record_path(self.out_dir, candidate))
                except CacheError:
                    rec = None  # a damaged record holds no entry: whoever claims the stem rewrites it
                owner = rec.source.sha256 if rec else None
            if owner in (None, content_sha256):
                self._claimed[candidate] = content_sha256
                return candidate
        raise CacheError(f"cannot name the cache entry of {source}: {stem} and its hashed variant are taken")


def _entry_lock(out_dir: Path, stem: str) -> FileLock:
    # thread_local=False: the claiming thread takes the lock, the writing thread releases it
    return FileLock(Path(out_dir) / LOCK_DIR / f"{stem}.lock", thread_local=False)


def claim_entry(
    out_dir: Path, stem: str, *, source_sha256: str, settings: ExtractionSettings, wait: bool
) -> FileLock | cache.CacheEntry | None:
    """Lock a video's cache entry: the held lock when it must be computed; the entry as verified
    (lock released) when it is complete and current; None when another process holds it and
    ``wait`` is False. The lock keeps two processes sharing a cache from computing one video twice."""
    lock = _entry_lock(out_dir, stem)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    try:
        entry = cache.reusable_entry(out_dir, stem, source_sha256=source_sha256, settings_key=settings.key())
    except BaseException:
        lock.release()
        raise
    if entry is not None:
        lock.release()
        return entry
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
        self._assigner = StemAssigner(out_dir)
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
        if isinstance(claim, cache.CacheEntry):
            return emit(Skipped(source, claim))
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
