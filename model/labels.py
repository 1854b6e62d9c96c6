"""Video labels: where each sample's weak label comes from, and the labelled training set.

Labels come, in order of precedence, from a ``video,label`` CSV, from ``normal/`` vs
``anomalous/``/``abnormal/`` folders in the source path, or from the XD-Violence ``_label_A``
(= normal) naming convention; a test set is labelled by its frame annotations (an XD-Violence
``annotations.txt``, `parse_annotations`): a video listed there is anomalous.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from vadpipe.errors import DataError

from .data import DataWarning, FeatureItem, FeatureSet, few, scan_features

__all__ = [
    "read_labels_csv",
    "assign_labels",
    "open_training_set",
    "parse_annotations",
    "labels_from_annotations",
]

_NORMAL_DIRS = {"normal"}
_ANOMALOUS_DIRS = {"anomalous", "abnormal"}
_LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "anomalous": 1, "abnormal": 1}


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
        raise DataError(f"no label for {len(set(missing))} video(s): {few(missing)}; {hint}")
    if table is not None:
        known = {name for item in features.items for name in item.names()}
        unknown = [name for name in table if name not in known]
        if unknown:  # harmless (one file may label several sets), but usually a typo or a renamed video
            warnings.warn(
                f"{len(unknown)} video(s) in {labels_csv} are not in the features: {few(unknown)}",
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


def parse_annotations(path: Path | str) -> dict[str, list[tuple[int, int]]]:
    """Read an XD-Violence ``annotations.txt``: ``<video>[.mp4] s1 e1 [s2 e2 ...]`` per line.

    Intervals are half-open ``[s, e)`` frame indices of the original video (model/README.md §8,
    postprocess/README.md §6); the ``.mp4`` suffix some names carry is removed. Videos absent
    from the file are normal.

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
