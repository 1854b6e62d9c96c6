"""Feature sets for training and validation: vadpipe caches and bare XD-Violence folders.

Two on-disk sources are read:

* a vadpipe feature cache (``vadpipe extract``): JSON records plus ``<stem>__<crop>.npy`` files;
* bare XD-Violence features as released by its authors: ``<video>__<crop>.npy`` files, flat or in
  ``RGB/`` (train split) and ``RGBTest/`` (test split), no records (model/README.md §8).

One sample is one crop file (model/README.md §2): the 5 XD-Violence crops of a video are 5 samples.
Every file is read once when the set is opened to check its shape and values, so a bad file
fails before training starts, not hours into it. Video labels come, in order of precedence,
from a ``video,label`` CSV, from ``normal/`` vs ``anomalous/``/``abnormal/`` folders in the
source path, or from the XD-Violence ``_label_A`` (= normal) naming convention.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.errors import CacheError, DataError
from vadpipe.extract.cache import CacheRecord, iter_records, read_record
from vadpipe.extract.fileio import sha256_bytes

__all__ = [
    "DataWarning",
    "FeatureItem",
    "FeatureSet",
    "scan_features",
    "load_item",
    "preload",
    "few",
    "XD_CLIP_LEN",
    "clip_geometry",
]

XD_CLIP_LEN = 16  # XD-Violence features: one row per non-overlapping 16-frame clip from frame 0 (model/README.md §8)

_XD_FILE = re.compile(r"^(?P<video>.+)__(?P<crop>\d+)\.npy$")
_XD_SPLITS = {"train": "RGB", "test": "RGBTest"}
_MAX_NAMES = 5  # how many offending names an error message lists


class DataWarning(UserWarning):
    """Data that is skipped or used with a caveat (empty feature files, partial extractions)."""


@dataclass(frozen=True)
class FeatureItem:
    """One training sample: one crop of one video.

    Attributes:
        video: the video's name: the cache record stem, or the XD file name minus ``__<crop>.npy``.
        crop: crop index (0 = centre).
        path: the ``.npy`` file, (T, F) float32.
        n_steps: T, the number of feature rows (one per clip).
        source: the original video path from the cache record, None for bare features.
        record: the cache record file, None for bare features.
        label: 1 anomalous, 0 normal, None until labels are assigned.
        label_source: where the label came from ("csv", "folder", "suffix", "annotations").
    """

    video: str
    crop: int
    path: Path
    n_steps: int
    source: Path | None = None
    record: Path | None = None
    label: int | None = None
    label_source: str | None = None

    def names(self) -> tuple[str, ...]:
        """Names a label file may use for this video: the stem, the source file name and stem."""
        if self.source is None:
            return (self.video,)
        return tuple(dict.fromkeys((self.video, self.source.name, self.source.stem)))


@dataclass(frozen=True)
class FeatureSet:
    """A checked list of samples with a common feature width, sorted by (video, crop).

    ``extraction`` is ``{"settings": ..., "settings_key": ...}`` copied from the cache records
    (None for bare features), so a trained model can refuse features of other settings.
    """

    root: Path
    kind: str  # "cache" or "xd"
    items: tuple[FeatureItem, ...]
    feature_dim: int
    extraction: dict | None

    @property
    def videos(self) -> list[str]:
        return sorted({item.video for item in self.items})

    def label_counts(self) -> dict[str, int]:
        """Number of videos per class (``normal``, ``anomalous``, ``unlabelled``)."""
        counts = Counter({item.video: item.label for item in self.items}.values())
        result = {"normal": counts[0], "anomalous": counts[1]}
        if counts[None]:
            result["unlabelled"] = counts[None]
        return result

    def summary(self) -> dict:
        """A JSON-able description for run configs."""
        return {
            "path": str(self.root.resolve()),
            "kind": self.kind,
            "n_samples": len(self.items),
            "n_videos": len(self.videos),
            "crops": sorted({item.crop for item in self.items}),
            "feature_dim": self.feature_dim,
            "videos_per_class": self.label_counts(),
            "label_sources": dict(sorted(Counter(i.label_source for i in self.items if i.label_source).items())),
        }


def few(names: Iterable[str]) -> str:
    """A few of ``names``, sorted, for an error message ("a, b, c and 4 more")."""
    names = sorted(set(names))
    more = f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
    return ", ".join(names[:_MAX_NAMES]) + more


def _read_checked(path: Path, *, expected_sha256: str | None = None) -> np.ndarray:
    """Load a feature file, checking its hash (cache files), rank and values."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read feature file {path}: {exc.strerror or exc}") from exc
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise CacheError(f"{path} is corrupted (sha256 differs from its record); re-run vadpipe extract")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path} is not a readable .npy array: {exc}") from exc
    if array.ndim != 2:
        raise DataError(f"{path} must hold a (T, F) array, got shape {array.shape}")
    if array.shape[0] and not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise DataError(f"{path} has NaN or inf values in {bad.size} of {array.shape[0]} rows (first row {bad[0]})")
    return array


def _check_widths(items: Sequence[FeatureItem], widths: Mapping[Path, int]) -> int:
    by_width: dict[int, list[str]] = defaultdict(list)
    for item in items:
        by_width[widths[item.path]].append(item.path.name)
    if len(by_width) > 1:
        detail = "; ".join(f"width {w}: {few(names)}" for w, names in sorted(by_width.items()))
        raise DataError(f"feature files have different widths ({detail}); use features of one extractor")
    return next(iter(by_width))


def _check_equal_lengths(items: Sequence[FeatureItem]) -> None:
    lengths: dict[str, set[int]] = defaultdict(set)
    for item in items:
        lengths[item.video].add(item.n_steps)
    bad = [video for video, values in lengths.items() if len(values) > 1]
    if bad:
        raise DataError(f"the crops of a video must have the same number of rows; they differ for {few(bad)}")


def _warn_empty(empty: list[str], root: Path) -> None:
    if empty:
        warnings.warn(
            f"skipped {len(empty)} feature file(s) with 0 clips in {root}: {few(empty)}", DataWarning, stacklevel=3
        )


def _scan_cache(root: Path, records: list[CacheRecord], crops: Sequence[int] | None) -> FeatureSet:
    items: list[FeatureItem] = []
    widths: dict[Path, int] = {}
    empty: list[str] = []
    partial: list[str] = []
    settings: dict[str, dict] = {}
    for rec in records:
        stem = rec.stem
        if rec.status == "zero_clips" or not rec.features:
            empty.append(stem)
            continue
        if rec.status == "partial":
            partial.append(stem)
        available = {f.crop: f for f in rec.features}
        wanted = sorted(available) if crops is None else list(crops)
        missing = [c for c in wanted if c not in available]
        if missing:
            raise DataError(
                f"{stem}: crop(s) {missing} not in the cache (it has {sorted(available)}); choose --crop-indices among those"
            )
        key = rec.extractor.settings_key
        settings.setdefault(key, {"settings": dict(rec.extractor.settings), "settings_key": key})
        source = Path(rec.source.path) if rec.source.path else None
        for crop in wanted:
            entry = available[crop]
            path = root / entry.file
            if not path.is_file():
                raise CacheError(f"{path} is missing (listed in {stem}.json); re-run vadpipe extract")
            array = _read_checked(path, expected_sha256=entry.sha256)
            if array.shape[0] == 0:
                empty.append(path.name)
                continue
            widths[path] = array.shape[1]
            items.append(FeatureItem(stem, crop, path, array.shape[0], source=source, record=root / f"{stem}.json"))
    _warn_empty(empty, root)
    if partial:
        warnings.warn(
            f"{len(partial)} video(s) were only partly decoded; using their clips: {few(partial)}",
            DataWarning,
            stacklevel=3,
        )
    if not items:
        raise DataError(f"no usable features in the cache {root} ({len(records)} records, all without clips)")
    if len(settings) > 1:
        keys = few(map(str, settings))
        raise DataError(
            f"the cache {root} mixes {len(settings)} extraction settings (keys {keys}); "
            "train on features of one setting"
        )
    _check_equal_lengths(items)
    dim = _check_widths(items, widths)
    items.sort(key=lambda i: (i.video, i.crop))
    return FeatureSet(root, "cache", tuple(items), dim, next(iter(settings.values())))


def _scan_bare(root: Path, split: str, crops: Sequence[int] | None) -> FeatureSet:
    folder = root
    subdirs = [name for name in _XD_SPLITS.values() if (root / name).is_dir()]
    if subdirs:
        folder = root / _XD_SPLITS[split]
        if not folder.is_dir():
            raise DataError(f"{root} has {', '.join(subdirs)}/ but no {_XD_SPLITS[split]}/ for the {split} split")
    files = []
    for path in sorted(folder.glob("*__*.npy")):
        match = _XD_FILE.match(path.name)
        if match and (crops is None or int(match["crop"]) in crops):
            files.append((match["video"], int(match["crop"]), path))
    if not files:
        wanted = "" if crops is None else f" for crops {list(crops)}"
        raise DataError(
            f"no features{wanted} in {folder}: expected a vadpipe cache (*.json records) or <video>__<crop>.npy files"
        )
    items: list[FeatureItem] = []
    widths: dict[Path, int] = {}
    empty: list[str] = []
    for video, crop, path in files:
        array = _read_checked(path)
        if array.shape[0] == 0:
            empty.append(path.name)
            continue
        widths[path] = array.shape[1]
        items.append(FeatureItem(video, crop, path, array.shape[0]))
    _warn_empty(empty, folder)
    if not items:
        raise DataError(f"every feature file in {folder} is empty (0 clips)")
    _check_equal_lengths(items)
    return FeatureSet(folder, "xd", tuple(items), _check_widths(items, widths), None)


def scan_features(root: Path | str, *, split: str = "train", crops: Sequence[int] | None = None) -> FeatureSet:
    """Find and check every feature file under ``root`` (labels not yet assigned).

    Args:
        root: a vadpipe cache folder, or a folder of ``<video>__<crop>.npy`` files, or an
            XD-Violence root holding ``RGB/`` and ``RGBTest/``.
        split: ``"train"`` (``RGB/``) or ``"test"`` (``RGBTest/``); only used for an XD root.
        crops: crop indices to use (None = every crop present).

    Raises:
        DataError: no features, NaN/inf rows, different widths, crops of unequal length.
        CacheError: a cache file missing or not matching its record's sha256.
    """
    root = Path(root)
    if split not in _XD_SPLITS:
        raise ValueError(f"split must be one of {tuple(_XD_SPLITS)}, got {split!r}")
    if crops is not None and (not crops or any(c < 0 for c in crops)):
        raise DataError(f"crops must be a non-empty list of indices >= 0, got {list(crops)}")
    if not root.is_dir():
        raise DataError(f"feature folder {root} does not exist")
    records = list(iter_records(root))
    if records:
        return _scan_cache(root, records, crops)
    return _scan_bare(root, split, crops)


def load_item(item: FeatureItem, *, feature_dim: int) -> np.ndarray:
    """The (T, F) float32 features of one sample (checked at scan time; shape re-checked here)."""
    try:
        array = np.load(item.path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {item.path}: {exc}") from exc
    if array.shape != (item.n_steps, feature_dim):
        raise DataError(
            f"{item.path} changed since it was scanned: shape {array.shape}, expected {(item.n_steps, feature_dim)}"
        )
    return np.asarray(array, dtype=np.float32)


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not a POSIX system: assume little
        return 4 << 30


def preload(data: FeatureSet, *, max_bytes: int | None = None) -> tuple[np.ndarray, ...] | None:
    """Every sample's (T, F) features read into memory once, in ``data.items`` order, when they
    take at most ``max_bytes`` (default: a quarter of the machine's memory); else None, and each
    batch reads its files (the XD-Violence training set is ~11 GB).

    An epoch then costs no file reads: the authors' loader reads every crop file once per epoch.
    """
    budget = _memory_bytes() // 4 if max_bytes is None else max_bytes
    needed = sum(item.n_steps for item in data.items) * data.feature_dim * 4
    if needed > budget:
        return None
    return tuple(load_item(item, feature_dim=data.feature_dim) for item in data.items)


def clip_geometry(item: FeatureItem) -> tuple[int, np.ndarray]:
    """``(clip_len, start_frames (T,))``: where each feature row's clip lies in the source video,
    from the item's cache record, or XD-Violence's 16-frame clips from frame 0 for bare features.

    Raises:
        CacheError: the record vanished or is not a vadpipe record.
        DataError: the record does not list one start frame per feature row.
    """
    if item.record is None:
        return XD_CLIP_LEN, XD_CLIP_LEN * np.arange(item.n_steps, dtype=np.int64)
    record = read_record(item.record)
    if record is None:
        raise CacheError(f"{item.record} is missing or not a vadpipe cache record; re-run vadpipe extract")
    starts = np.asarray(record.clips.start_frames, dtype=np.int64)
    if starts.shape != (item.n_steps,):
        raise DataError(
            f"{item.record} lists {starts.size} clip start frames for {item.n_steps} "
            "feature rows; re-run vadpipe extract"
        )
    return int(record.clips.length), starts
