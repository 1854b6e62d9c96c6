"""The feature cache: one flat folder of ``<stem>__<crop>.npy`` files and one JSON record per video.

The record is written last, after every feature file is in place, so its presence marks a
complete entry; it holds the sha256 of each feature file, so a truncated or altered file is
detected instead of silently used, and the sha256 of its own content (``record_sha256``), so an
edited or damaged record is recomputed too. Stems that clash between folders get a suffix derived
from the video's content hash (``claims.StemAssigner``), so the naming does not depend on the
order of the inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vadpipe.errors import CacheError

from .contract import dataclass_fields
from .fileio import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file

__all__ = [
    "SCHEMA_VERSION",
    "FAILURES_FILE",
    "CacheRecord",
    "SourceInfo",
    "VideoMeta",
    "ClipGeometry",
    "ExtractorInfo",
    "FeatureFile",
    "RECORD_STATUSES",
    "record_checksum",
    "record_path",
    "feature_path",
    "times_path",
    "read_record",
    "iter_records",
    "CacheEntry",
    "entry_problem",
    "reusable_entry",
    "write_entry",
    "load_features",
    "append_failure",
]

SCHEMA_VERSION = 1
FAILURES_FILE = "failures.jsonl"


def record_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.json"


def feature_path(out_dir: Path, stem: str, crop: int) -> Path:
    return Path(out_dir) / f"{stem}__{crop}.npy"


def times_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.times.npy"


def record_checksum(record: Mapping[str, Any]) -> str:
    """sha256 of the record's content (canonical JSON, without the ``record_sha256`` key itself)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


# --------------------------------------------------------------------------- the record
#
# Field order below is the key order on disk: ``to_dict`` walks the fields in order, so a record
# read and written again is the same bytes (and keeps its ``record_sha256``).


@dataclass(frozen=True)
class SourceInfo:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VideoMeta:
    """The decoded stream: ``fps`` is the rate the clips were cut at (``native_fps`` the file's)."""

    fps: float
    native_fps: float | None = field(default=None, kw_only=True)
    n_frames: int
    duration_s: float
    width: int
    height: int
    rotation: int
    codec: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class ClipGeometry:
    """Where each feature row's clip lies: start frame, start and end time (s), per row."""

    length: int
    stride: int
    count: int
    start_frames: tuple[int, ...]
    start_s: tuple[float, ...]
    end_s: tuple[float, ...]


@dataclass(frozen=True)
class ExtractorInfo:
    """What computed the features; ``settings_key`` decides whether an entry is current."""

    settings: Mapping[str, Any]
    settings_key: str
    weights_sha256: str
    vadpipe_version: str


@dataclass(frozen=True)
class FeatureFile:
    file: str
    crop: int
    sha256: str
    shape: tuple[int, ...]


RECORD_STATUSES = ("ok", "partial", "zero_clips")


@dataclass(frozen=True)
class CacheRecord:
    """The JSON record of one video in the cache, the file the extract stage hands to the model.

    ``features``, ``frame_times_file`` and ``record_sha256`` are filled in by ``write_entry``; a
    record built before writing leaves them empty. ``error`` names the damage of a ``partial``
    video.
    """

    schema_version: int
    stem: str
    source: SourceInfo
    video: VideoMeta
    clips: ClipGeometry
    crops: tuple[str, ...]
    extractor: ExtractorInfo
    status: str
    error: str | None
    features: tuple[FeatureFile, ...] = ()
    frame_times_file: str = ""
    record_sha256: str = ""

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "cache record") -> CacheRecord:
        """Check every field (CacheError naming the first bad one, e.g. ``clips.count``).

        ``features``, ``frame_times_file`` and ``record_sha256`` may be absent (a record not yet
        written), and so may ``video.native_fps`` and ``video.codec``; values are kept as given, so
        ``to_dict`` reproduces a written record exactly.
        """
        rec = dataclass_fields(cls, data, where=where, error=CacheError, nested=_NESTED)
        if rec.schema_version != SCHEMA_VERSION:
            raise CacheError(f"{where}: field 'schema_version' must be {SCHEMA_VERSION}, got {rec.schema_version!r}")
        if rec.status not in RECORD_STATUSES:
            raise CacheError(f"{where}: field 'status' must be one of {', '.join(RECORD_STATUSES)}, got {rec.status!r}")
        clips = rec.clips
        for name in ("start_frames", "start_s", "end_s"):
            if len(getattr(clips, name)) != clips.count:
                raise CacheError(
                    f"{where}: field 'clips.{name}' lists {len(getattr(clips, name))} values "
                    f"for clips.count = {clips.count}"
                )
        return rec

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON types, keys in on-disk order."""
        return _plain(self)

    def __reduce__(self) -> tuple:
        # a read record holds mappingproxies, which do not pickle: a result carrying it crosses
        # processes (one per device, Ray tasks) as its JSON form
        return (CacheRecord.from_dict, (self.to_dict(),))

    def checksum(self) -> str:
        return record_checksum(self.to_dict())

    @property
    def intact(self) -> bool:
        """Whether ``record_sha256`` matches the content (False for an edited or damaged record)."""
        return self.record_sha256 == self.checksum()

    @property
    def clip_frames(self) -> np.ndarray:
        """(count, length) int64: the frame indices of every clip."""
        starts = np.asarray(self.clips.start_frames, dtype=np.int64).reshape(-1, 1)
        return starts + np.arange(self.clips.length, dtype=np.int64)[None, :]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


_NESTED = {
    "SourceInfo": SourceInfo,
    "VideoMeta": VideoMeta,
    "ClipGeometry": ClipGeometry,
    "ExtractorInfo": ExtractorInfo,
    "FeatureFile": FeatureFile,
}


def read_record(path: Path) -> CacheRecord | None:
    """The record at ``path``; None when it is missing or not a vadpipe record at all (unreadable,
    not JSON, no ``schema_version``/``stem``), CacheError naming the field when it is a damaged one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or "stem" not in data:
        return None
    return CacheRecord.from_dict(data, where=str(path))


def iter_records(out_dir: Path) -> Iterator[CacheRecord]:
    """Every record in the cache folder, sorted by stem (CacheError for a damaged one)."""
    for path in sorted(Path(out_dir).glob("*.json")):
        rec = read_record(path)
        if rec is not None and path.stem == rec.stem:
            yield rec


@dataclass(frozen=True)
class CacheEntry:
    """A complete entry as the job wrote or verified it: its record and frame times, carried up so
    that detect and its plots neither read the record again nor hash the features a second time."""

    record: CacheRecord
    frame_times: np.ndarray = field(compare=False, repr=False)  # float64 (n_frames,)


def entry_problem(out_dir: Path, record: CacheRecord | None, *, source_sha256: str, settings_key: str) -> str | None:
    """Why a cache entry cannot be reused (None when it is complete, intact and current)."""
    found = _verified_times(out_dir, record, source_sha256=source_sha256, settings_key=settings_key)
    return found if isinstance(found, str) else None


def _verified_times(
    out_dir: Path, record: CacheRecord | None, *, source_sha256: str, settings_key: str
) -> str | np.ndarray:
    """Why the entry cannot be reused, or its frame times (read while checking it) when it can."""
    if record is None:
        return "no record"
    if not record.intact:
        return "record altered or damaged (its record_sha256 does not match)"
    if record.source.sha256 != source_sha256:
        return "video content changed"
    if record.extractor.settings_key != settings_key:
        return "extraction settings changed"
    count, n_frames = record.clips.count, record.video.n_frames
    if len(record.features) != len(record.crops):
        return "record lists fewer feature files than crops"
    for feat in record.features:
        path = Path(out_dir) / feat.file
        if not path.is_file():
            return f"{feat.file} missing"
        if not feat.shape or feat.shape[0] != count:
            return f"{feat.file} has {feat.shape[:1]} rows for {count} clips"
        if sha256_file(path) != feat.sha256:
            return f"{feat.file} corrupted (sha256 mismatch)"
    times = _load_npy(Path(out_dir) / record.frame_times_file) if record.frame_times_file else None
    if times is None or times.shape != (n_frames,) or not np.isfinite(times).all():
        return f"{record.frame_times_file or 'frame times file'} missing or corrupted"
    return times


def reusable_entry(out_dir: Path, stem: str, *, source_sha256: str, settings_key: str) -> CacheEntry | None:
    """The entry when it is complete, intact and current; None when it must be computed
    (missing, damaged, stale): the one skip check of every engine."""
    try:
        record = read_record(record_path(out_dir, stem))
    except CacheError:
        return None
    found = _verified_times(out_dir, record, source_sha256=source_sha256, settings_key=settings_key)
    return None if isinstance(found, str) else CacheEntry(record, found)


def _load_npy(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_entry(
    out_dir: Path, record: CacheRecord, features: Sequence[np.ndarray], frame_times: np.ndarray
) -> CacheRecord:
    """Atomically write the feature files, frame times and finally the record; returns the record
    as written (its ``features``, ``frame_times_file`` and ``record_sha256`` filled in)."""
    out_dir = Path(out_dir)
    stem = record.stem
    written: list[Path] = []
    text = ""
    try:
        entries = []
        for crop, feats in enumerate(features):
            data = _npy_bytes(np.ascontiguousarray(feats, dtype=np.float32))
            path = feature_path(out_dir, stem, crop)
            atomic_write_bytes(path, data)
            written.append(path)
            entries.append(
                FeatureFile(
                    file=path.name, crop=crop, sha256=sha256_bytes(data), shape=tuple(int(n) for n in feats.shape)
                )
            )
        tpath = times_path(out_dir, stem)
        atomic_write_bytes(tpath, _npy_bytes(np.asarray(frame_times, dtype=np.float64)))
        written.append(tpath)
        record = dataclasses.replace(record, features=tuple(entries), frame_times_file=tpath.name, record_sha256="")
        record = dataclasses.replace(record, record_sha256=record.checksum())
        text = json.dumps(record.to_dict(), indent=1)
        atomic_write_text(record_path(out_dir, stem), text)
    except BaseException as exc:
        # no half entry: the files already renamed into place are useless without their record
        # (a write error, or an interrupt: Ctrl-C, a Ray task cancelled by its interrupted driver);
        # an interrupt just after the record's rename leaves the entry complete
        if not isinstance(exc, OSError) and text and _reads(record_path(out_dir, stem)) == text:
            raise
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CacheError(f"cannot write features of {stem} into {out_dir}: {exc.strerror or exc}") from exc
        raise
    return record


def _reads(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def load_features(out_dir: Path, record: CacheRecord, crop: int = 0, *, verify: bool = True) -> np.ndarray:
    """The (T, 1024) float32 features of one crop; checks the file against the record's sha256."""
    try:
        feat = next(f for f in record.features if f.crop == crop)
    except StopIteration:
        raise CacheError(f"{record.stem}: no crop {crop} in the cache (crops: {list(record.crops)})") from None
    path = Path(out_dir) / feat.file
    if verify and (not path.is_file() or sha256_file(path) != feat.sha256):
        raise CacheError(f"{path} is missing or corrupted (sha256 differs from its record); re-run vadpipe extract")
    return np.load(path, allow_pickle=False)


def append_failure(out_dir: Path, source: Path, reason: str) -> None:
    """One JSON line per failed video in ``failures.jsonl`` (appends are atomic for short lines)."""
    line = json.dumps({"source": str(source), "error": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(out_dir) / FAILURES_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        with os.fdopen(fd, "a") as f:
            f.write(line + "\n")
    except OSError as exc:
        raise CacheError(f"cannot write {FAILURES_FILE} in {out_dir}: {exc.strerror or exc}") from exc
