"""The feature cache: one flat folder of ``<stem>__<crop>.npy`` files and one JSON record per video.

The record is written last, after every feature file is in place, so its presence marks a
complete entry; it holds the sha256 of each feature file, so a truncated or altered file is
detected instead of silently used, and the sha256 of its own content (``record_sha256``), so an
edited or damaged record is recomputed too. Stems that clash between folders get a suffix derived
from the video's content hash, so the naming does not depend on the order of the inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vadpipe.errors import CacheError

from .fileio import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file

__all__ = [
    "SCHEMA_VERSION",
    "FAILURES_FILE",
    "record_checksum",
    "record_path",
    "feature_path",
    "times_path",
    "read_record",
    "iter_records",
    "entry_problem",
    "write_entry",
    "load_features",
    "load_frame_times",
    "StemAssigner",
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


def record_checksum(record: dict) -> str:
    """sha256 of the record's content (canonical JSON, without the ``record_sha256`` key itself)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing or not a valid vadpipe record."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or "stem" not in data:
        return None
    return data


def iter_records(out_dir: Path) -> Iterator[dict]:
    """Every valid record in the cache folder, sorted by stem."""
    for path in sorted(Path(out_dir).glob("*.json")):
        rec = read_record(path)
        if rec is not None and path.stem == rec["stem"]:
            yield rec


def entry_problem(out_dir: Path, record: dict | None, *, source_sha256: str, settings_key: str) -> str | None:
    """Why a cache entry cannot be reused (None when it is complete, intact and current)."""
    if record is None:
        return "no record"
    if record.get("record_sha256") != record_checksum(record):
        return "record altered or damaged (its record_sha256 does not match)"
    try:
        if record["source"]["sha256"] != source_sha256:
            return "video content changed"
        if record["extractor"]["settings_key"] != settings_key:
            return "extraction settings changed"
        count, n_frames = record["clips"]["count"], record["video"]["n_frames"]
        if len(record["features"]) != len(record["crops"]):
            return "record lists fewer feature files than crops"
        for feat in record["features"]:
            path = Path(out_dir) / feat["file"]
            if not path.is_file():
                return f"{feat['file']} missing"
            if feat["shape"][0] != count:
                return f"{feat['file']} has {feat['shape'][0]} rows for {count} clips"
            if sha256_file(path) != feat["sha256"]:
                return f"{feat['file']} corrupted (sha256 mismatch)"
        times = _load_npy(Path(out_dir) / record["frame_times_file"])
        if times is None or times.shape != (n_frames,) or not np.isfinite(times).all():
            return f"{record['frame_times_file']} missing or corrupted"
    except (KeyError, TypeError, IndexError):
        return "record incomplete"
    return None


def _load_npy(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_entry(out_dir: Path, record: dict, features: list[np.ndarray], frame_times: np.ndarray) -> dict:
    """Atomically write the feature files, frame times and finally the record; returns the record."""
    out_dir = Path(out_dir)
    stem = record["stem"]
    written: list[Path] = []
    try:
        entries = []
        for crop, feats in enumerate(features):
            data = _npy_bytes(np.ascontiguousarray(feats, dtype=np.float32))
            path = feature_path(out_dir, stem, crop)
            atomic_write_bytes(path, data)
            written.append(path)
            entries.append({"file": path.name, "crop": crop, "sha256": sha256_bytes(data),
                            "shape": list(feats.shape)})
        tpath = times_path(out_dir, stem)
        atomic_write_bytes(tpath, _npy_bytes(np.asarray(frame_times, dtype=np.float64)))
        written.append(tpath)
        record = {**record, "features": entries, "frame_times_file": tpath.name}
        record["record_sha256"] = record_checksum(record)
        atomic_write_text(record_path(out_dir, stem), json.dumps(record, indent=1))
    except OSError as exc:
        # no half entry: the files already renamed into place are useless without their record
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise CacheError(f"cannot write features of {stem} into {out_dir}: {exc.strerror or exc}") from exc
    return record


def load_features(out_dir: Path, record: dict, crop: int = 0, *, verify: bool = True) -> np.ndarray:
    """The (T, 1024) float32 features of one crop; checks the file against the record's sha256."""
    try:
        feat = next(f for f in record["features"] if f["crop"] == crop)
    except StopIteration:
        raise CacheError(f"{record['stem']}: no crop {crop} in the cache (crops: {record.get('crops')})") from None
    path = Path(out_dir) / feat["file"]
    if verify and (not path.is_file() or sha256_file(path) != feat["sha256"]):
        raise CacheError(f"{path} is missing or corrupted (sha256 differs from its record); re-run vadpipe extract")
    return np.load(path, allow_pickle=False)


def load_frame_times(out_dir: Path, record: dict) -> np.ndarray:
    """Presentation time (s) of every frame the clips index into, float64 (n_frames,)."""
    return np.load(Path(out_dir) / record["frame_times_file"], allow_pickle=False)


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
                rec = read_record(record_path(self.out_dir, candidate))
                owner = rec["source"]["sha256"] if rec else None
            if owner in (None, content_sha256):
                self._claimed[candidate] = content_sha256
                return candidate
        raise CacheError(f"cannot name the cache entry of {source}: {stem} and its hashed variant are taken")


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
