"""Feature sets for training and validation: vadpipe caches, bare XD-Violence folders, labels.

Two on-disk sources are read:

* a vadpipe feature cache (``vadpipe extract``): JSON records plus ``<stem>__<crop>.npy`` files;
* bare XD-Violence features as released by its authors: ``<video>__<crop>.npy`` files, flat or in
  ``RGB/`` (train split) and ``RGBTest/`` (test split), no records (method.md §8.1).

One sample is one crop file (method.md §2): the 5 XD-Violence crops of a video are 5 samples.
Every file is read once when the set is opened to check its shape and values, so a bad file
fails before training starts, not hours into it. Video labels come, in order of precedence,
from a ``video,label`` CSV, from ``normal/`` vs ``anomalous/``/``abnormal/`` folders in the
source path, or from the XD-Violence ``_label_A`` (= normal) naming convention.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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
    "assign_labels",
    "labels_from_annotations",
    "open_training_set",
    "load_item",
    "preload",
    "read_labels_csv",
    "parse_annotations",
    "XD_CLIP_LEN",
    "clip_geometry",
]

XD_CLIP_LEN = 16  # XD-Violence features: one row per non-overlapping 16-frame clip from frame 0 (method.md §8.1)

_XD_FILE = re.compile(r"^(?P<video>.+)__(?P<crop>\d+)\.npy$")
_XD_SPLITS = {"train": "RGB", "test": "RGBTest"}
_NORMAL_DIRS = {"normal"}
_ANOMALOUS_DIRS = {"anomalous", "abnormal"}
_LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "anomalous": 1, "abnormal": 1}
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


def _few(names: Iterable[str]) -> str:
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
        detail = "; ".join(f"width {w}: {_few(names)}" for w, names in sorted(by_width.items()))
        raise DataError(f"feature files have different widths ({detail}); use features of one extractor")
    return next(iter(by_width))


def _check_equal_lengths(items: Sequence[FeatureItem]) -> None:
    lengths: dict[str, set[int]] = defaultdict(set)
    for item in items:
        lengths[item.video].add(item.n_steps)
    bad = [video for video, values in lengths.items() if len(values) > 1]
    if bad:
        raise DataError(f"the crops of a video must have the same number of rows; they differ for {_few(bad)}")


def _warn_empty(empty: list[str], root: Path) -> None:
    if empty:
        warnings.warn(
            f"skipped {len(empty)} feature file(s) with 0 clips in {root}: {_few(empty)}", DataWarning, stacklevel=3
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
                f"{stem}: crop(s) {missing} not in the cache (it has {sorted(available)}); choose --crops among those"
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
            f"{len(partial)} video(s) were only partly decoded; using their clips: {_few(partial)}",
            DataWarning,
            stacklevel=3,
        )
    if not items:
        raise DataError(f"no usable features in the cache {root} ({len(records)} records, all without clips)")
    if len(settings) > 1:
        keys = _few(map(str, settings))
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


def _read_text(path: Path, what: str, *, encoding: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None


def read_labels_csv(path: Path | str) -> dict[str, int]:
    """``video,label`` rows (label 0/1 or normal/anomalous) as {video: 0|1}."""
    path = Path(path)
    text = _read_text(path, "labels file", encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    if header[:2] != ["video", "label"]:
        raise DataError(f"{path}: the first line must be the header 'video,label', got {','.join(header)[:80]!r}")
    labels: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DataError(f"{path}:{lineno}: expected 'video,label', got {','.join(row)[:80]!r}")
        video, word = row[0].strip(), row[1].strip().lower()
        if not video:
            raise DataError(f"{path}:{lineno}: empty video name")
        if word not in _LABEL_WORDS:
            raise DataError(f"{path}:{lineno}: label must be 0, 1, normal or anomalous, got {row[1].strip()!r}")
        if labels.get(video, _LABEL_WORDS[word]) != _LABEL_WORDS[word]:
            raise DataError(f"{path}:{lineno}: {video!r} is labelled both normal and anomalous")
        labels[video] = _LABEL_WORDS[word]
    if not labels:
        raise DataError(f"{path} holds no labels")
    return labels


def _folder_label(source: Path | None) -> int | None:
    if source is None:
        return None
    for folder in reversed(source.parent.parts):  # the nearest folder decides
        name = folder.lower()
        if name in _NORMAL_DIRS:
            return 0
        if name in _ANOMALOUS_DIRS:
            return 1
    return None


def _suffix_label(item: FeatureItem) -> int | None:
    for name in item.names():
        if "_label_" in name:
            return 0 if "_label_A" in name else 1
    return None


def _lookup(item: FeatureItem, table: Mapping[str, int], what: str) -> int | None:
    found = {table[name] for name in item.names() if name in table}
    if len(found) > 1:
        raise DataError(f"{what} gives {item.video} both labels under different names ({', '.join(item.names())})")
    return found.pop() if found else None


def assign_labels(features: FeatureSet, *, labels_csv: Path | str | None = None) -> FeatureSet:
    """Label every sample: from ``labels_csv`` when given (it must cover every video), else per
    video from ``normal/``/``anomalous/`` folders in its source path, else the ``_label_A`` suffix.

    Raises:
        DataError: some video has no label, naming a few of them and how to add labels.
    """
    table = read_labels_csv(labels_csv) if labels_csv is not None else None
    items, missing = [], []
    for item in features.items:
        if table is not None:
            label, source = _lookup(item, table, str(labels_csv)), "csv"
        else:
            label, source = _folder_label(item.source), "folder"
            if label is None:
                label, source = _suffix_label(item), "suffix"
        if label is None:
            missing.append(item.video)
        items.append(replace(item, label=label, label_source=source if label is not None else None))
    if missing:
        hint = (
            f"add them to {labels_csv}"
            if table is not None
            else "give --labels FILE.csv (video,label), or keep videos in normal/ and anomalous/ folders, "
            "or name them with the XD-Violence _label_A (normal) / _label_<code> suffix"
        )
        raise DataError(f"no label for {len(set(missing))} video(s): {_few(missing)}; {hint}")
    if table is not None:
        known = {name for item in features.items for name in item.names()}
        unknown = [name for name in table if name not in known]
        if unknown:  # harmless (one file may label several sets), but usually a typo or a renamed video
            warnings.warn(
                f"{len(unknown)} video(s) in {labels_csv} are not in the features: {_few(unknown)}",
                DataWarning,
                stacklevel=2,
            )
    return replace(features, items=tuple(items))


def labels_from_annotations(features: FeatureSet, annotations: Mapping[str, object]) -> FeatureSet:
    """Label videos listed in ``annotations`` (see :func:`parse_annotations`) anomalous, others normal."""
    items = tuple(
        replace(item, label=int(any(name in annotations for name in item.names())), label_source="annotations")
        for item in features.items
    )
    return replace(features, items=items)


def open_training_set(
    root: Path | str, *, labels_csv: Path | str | None = None, crops: Sequence[int] | None = None
) -> FeatureSet:
    """The labelled training samples under ``root``; both classes must be present.

    Example:
        >>> train_set = open_training_set("xd/", crops=[0])  # doctest: +SKIP
    """
    features = assign_labels(scan_features(root, split="train", crops=crops), labels_csv=labels_csv)
    counts = features.label_counts()
    if not counts["normal"] or not counts["anomalous"]:
        only = "normal" if counts["normal"] else "anomalous"
        raise DataError(
            f"all {len(features.videos)} training videos are {only}: "
            "weakly supervised training needs both normal and anomalous videos"
        )
    return features


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


def parse_annotations(path: Path | str) -> dict[str, list[tuple[int, int]]]:
    """Read an XD-Violence ``annotations.txt``: ``<video>[.mp4] s1 e1 [s2 e2 ...]`` per line.

    Intervals are half-open ``[s, e)`` frame indices of the original video (method.md §8.4);
    the ``.mp4`` suffix some names carry is removed. Videos absent from the file are normal.

    Returns:
        {video: [(start_frame, end_frame), ...]} in file order.
    """
    path = Path(path)
    lines = _read_text(path, "annotations", encoding="utf-8").splitlines()
    result: dict[str, list[tuple[int, int]]] = {}
    for lineno, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        name = tokens[0].removesuffix(".mp4")
        numbers = tokens[1:]
        if not numbers or len(numbers) % 2:
            raise DataError(f"{path}:{lineno}: expected '<video> start end [start end ...]', got {line.strip()!r}")
        try:
            values = [int(n) for n in numbers]
        except ValueError:
            raise DataError(f"{path}:{lineno}: frame indices must be integers, got {line.strip()!r}") from None
        pairs = list(zip(values[0::2], values[1::2]))
        bad = [p for p in pairs if not 0 <= p[0] < p[1]]
        if bad:
            raise DataError(f"{path}:{lineno}: intervals must satisfy 0 <= start < end, got {bad}")
        if name in result:
            raise DataError(f"{path}:{lineno}: {name!r} is annotated twice")
        result[name] = pairs
    return result


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
