"""The intervals JSON document `vadpipe detect` writes: its types, and the one writer and reader.

`IntervalsDocument` is the document; `write_intervals` (and `intervals_json` for stdout) is the
only way one is written, `read_intervals` / `validate_document` the only way one is read, so the
schema lives here alone. Entries are cut from the scores by `vadpipe.postprocess.frame_intervals`.

Document (``schema_version`` 1)::

    {"schema_version": 1,
     "operating_point": {"threshold": 0.35, "low": 0.05, "high": 1.0,
                         "min_duration_s": 0.0, "merge_gap_s": 0.0,
                         "video_threshold": 0.0, "method": "fixed",
                         "target_false_alarm_rate": null,
                         "video_calibration": null, "interval_calibration": null},
     "videos": [{"source": str, "duration_s": float, "fps": float, "n_frames": int,
                 "clip_len": int, "video_score": float, "video_probability": float | null,
                 "clips": [{"start_s", "attention", "tcam", "wtcam"}, ...],
                 "intervals": [{"start_frame", "end_frame" (exclusive), "start_s", "end_s",
                                "score", "calibrated_score": float | null}, ...],
                 "ood": {"outside_training": bool, "share_outside": float, "max_share": float,
                         "clip_threshold": float, "clip_distances": [float, ...]} | null}, ...],
     "model": str | null,
     "not_scored": [{"source": str, "reason": str}, ...],
     "damaged": [{"source": str, "damage": str}, ...]}

Intervals are sorted by time and disjoint; every score lies in [0, 1]. The operating point's
keys from ``video_threshold`` on, ``video_probability`` and ``calibrated_score`` were added
after the first release of schema 1 and are optional when reading: a document without them is
one written at the paper's fixed threshold without calibration. ``ood`` (added later too, absent
or null: not judged, e.g. a model trained before vadpipe recorded its training footage) says
whether the video is outside the training footage (`vadpipe.postprocess.ood`): then its scores
and probabilities are not valid for it. ``model`` (the run folder), ``not_scored`` (videos too
short or that failed) and ``damaged`` (videos scored from what could be decoded) are optional
too (absent: none). Readers that ignore unknown keys read every version.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vadpipe.errors import CheckpointError, ConfigError, DataError
from vadpipe.extract.contract import optional_unit, require, unit
from vadpipe.extract.fileio import atomic_write_text
from vadpipe.model.run_config import SavedOperatingPoint
from vadpipe.postprocess.calibration import ScoreCalibrator
from vadpipe.postprocess.ood import VideoOOD, validate_ood_entry

__all__ = [
    "SCHEMA_VERSION",
    "ClipRecord",
    "Interval",
    "OperatingPoint",
    "VideoIntervals",
    "NotScored",
    "DamagedVideo",
    "IntervalsDocument",
    "document_to_dict",
    "validate_document",
    "read_intervals",
    "intervals_json",
    "write_intervals",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ClipRecord:
    """Scores of one clip, starting at ``start_s`` seconds."""

    start_s: float
    attention: float
    tcam: float
    wtcam: float


@dataclass(frozen=True)
class Interval:
    """An anomalous interval: source frames ``[start_frame, end_frame)`` and their times.

    ``score`` is the mean weighted T-CAM over the interval; ``calibrated_score`` the
    probability the operating point's interval calibration gives it (None without one).
    """

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    score: float
    calibrated_score: float | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """How intervals were cut from the scores (recorded so a document can be reproduced).

    The thresholds and calibrations are a `SavedOperatingPoint` (the form a run stores and
    checks), so both share one definition; this adds what detection chooses per call.

    Attributes:
        chosen: curve threshold (intervals are the runs of the frame-rate weighted T-CAM
            strictly above it), video gate (a video whose video score is below it gets no
            interval), ``method`` (``"fixed"``: the paper's 0.35, no gate; ``"manual"``: given
            by the user; ``"false_alarms"`` or ``"f1"``: calibrated on held-out training videos,
            see `vadpipe.postprocess.calibration`), the target false-alarm rate and the score
            calibrations as stored.
        low, high: clipping of the frame curve (postprocess/README.md §2).
        min_duration_s, merge_gap_s: interval post-filters in seconds.
        video_calibration: video score -> probability the video is anomalous (parsed from ``chosen``).
        interval_calibration: interval score -> probability the interval is a real detection.

    Raises:
        ConfigError: a stored calibration is unusable.
    """

    chosen: SavedOperatingPoint = field(default_factory=SavedOperatingPoint)
    low: float = 0.05
    high: float = 1.0
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    video_calibration: ScoreCalibrator | None = field(init=False, repr=False, compare=False)
    interval_calibration: ScoreCalibrator | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("video_calibration", "interval_calibration"):
            stored = getattr(self.chosen, key)
            try:
                parsed = None if stored is None else ScoreCalibrator.from_dict(dict(stored))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"operating_point.{key} is unusable: {exc}") from None
            object.__setattr__(self, key, parsed)

    @property
    def threshold(self) -> float:
        return self.chosen.threshold

    @property
    def video_threshold(self) -> float:
        return self.chosen.video_threshold

    @property
    def method(self) -> str:
        return self.chosen.method

    @property
    def target_false_alarm_rate(self) -> float | None:
        return self.chosen.target_false_alarm_rate

    def to_dict(self) -> dict[str, Any]:
        """The document's ``operating_point`` entry, keys in schema order."""
        calibrations = (self.video_calibration, self.interval_calibration)
        return {
            "threshold": self.threshold,
            "low": self.low,
            "high": self.high,
            "min_duration_s": self.min_duration_s,
            "merge_gap_s": self.merge_gap_s,
            "video_threshold": self.video_threshold,
            "method": self.method,
            "target_false_alarm_rate": self.target_false_alarm_rate,
            "video_calibration": None if calibrations[0] is None else calibrations[0].to_dict(),
            "interval_calibration": None if calibrations[1] is None else calibrations[1].to_dict(),
        }

    @classmethod
    def for_run(
        cls,
        saved: SavedOperatingPoint | None,
        *,
        where: str,
        threshold: float | None = None,
        video_threshold: float | None = None,
        min_duration_s: float = 0.0,
        merge_gap_s: float = 0.0,
    ) -> OperatingPoint:
        """The operating point to detect with: the run's calibrated one, or the caller's.

        ``threshold`` or ``video_threshold`` given: a manual operating point (the other one
        from the run when only the gate is given; no gate when only the threshold is given,
        the paper's rule). The video calibration is kept (it does not depend on thresholds);
        the interval calibration, fitted on the intervals of the run's thresholds, is dropped.
        A run without a saved operating point gets the paper's fixed 0.35 and no gate.

        Args:
            saved: the run's stored operating point (`RunConfig.operating_point`, checked
                when the run was loaded), or None.
            where: names the run's config in error messages.

        Raises:
            CheckpointError: a stored score calibration is unusable.
        """
        saved = saved or SavedOperatingPoint()
        if threshold is not None or video_threshold is not None:
            saved = SavedOperatingPoint(
                method="manual",
                threshold=float(threshold if threshold is not None else saved.threshold),
                video_threshold=float(video_threshold or 0.0),
                video_calibration=saved.video_calibration,
            )
        try:
            return cls(saved, min_duration_s=min_duration_s, merge_gap_s=merge_gap_s)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class VideoIntervals:
    """One video's entry of the document."""

    source: str
    duration_s: float
    fps: float
    n_frames: int
    clip_len: int
    video_score: float
    clips: tuple[ClipRecord, ...]
    intervals: tuple[Interval, ...]
    video_probability: float | None = None
    ood: VideoOOD | None = None  # None: not judged (the model cannot)


@dataclass(frozen=True)
class NotScored:
    """A video detection could not score, and why (too short for one clip, or failed)."""

    source: str
    reason: str


@dataclass(frozen=True)
class DamagedVideo:
    """A damaged video, scored from what could be decoded; ``damage`` says what was lost."""

    source: str
    damage: str


@dataclass(frozen=True)
class IntervalsDocument:
    """The whole document; ``schema_version`` is fixed by this module.

    ``model`` is the run folder that scored the videos (None: not recorded).
    """

    videos: tuple[VideoIntervals, ...]
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    model: str | None = None
    not_scored: tuple[NotScored, ...] = ()
    damaged: tuple[DamagedVideo, ...] = ()
    schema_version: int = SCHEMA_VERSION


def document_to_dict(doc: IntervalsDocument) -> dict[str, Any]:
    """The JSON-ready dict of a document, keys in schema order."""
    videos = []
    for v in doc.videos:
        entry = {k: val for k, val in asdict(v).items() if k not in ("clips", "intervals", "video_probability", "ood")}
        videos.append(
            {
                **entry,
                "video_probability": v.video_probability,
                "clips": [asdict(c) for c in v.clips],
                "intervals": [asdict(i) for i in v.intervals],
                "ood": v.ood.to_dict() if v.ood is not None else None,
            }
        )
    return {
        "schema_version": doc.schema_version,
        "operating_point": doc.operating_point.to_dict(),
        "videos": videos,
        "model": doc.model,
        "not_scored": [asdict(n) for n in doc.not_scored],
        "damaged": [asdict(d) for d in doc.damaged],
    }


# --- reading ---------------------------------------------------------------------------------


def _operating_point(op: Any) -> OperatingPoint:
    where = "operating_point"
    for key in ("threshold", "low", "high"):
        require(op, key, float, where)
    for key in ("min_duration_s", "merge_gap_s"):
        if require(op, key, float, where) < 0:
            raise DataError(f"operating_point.{key} must be >= 0")
    try:  # the thresholds, method and calibrations: checked as a run's stored ones are
        chosen = SavedOperatingPoint.from_dict(op, where="document")
        return OperatingPoint(chosen, op["low"], op["high"], op["min_duration_s"], op["merge_gap_s"])
    except (CheckpointError, ConfigError) as exc:
        raise DataError(str(exc)) from None


def _clips(video: dict, where: str) -> tuple[ClipRecord, ...]:
    clips = []
    previous = -math.inf
    for c_i, clip in enumerate(require(video, "clips", list, where)):
        cw = f"{where}.clips[{c_i}]"
        start = require(clip, "start_s", float, cw)
        if start < previous:
            raise DataError(f"{cw}.start_s {start} is before the previous clip's {previous}")
        previous = start
        clips.append(ClipRecord(start, *(unit(clip, key, cw) for key in ("attention", "tcam", "wtcam"))))
    return tuple(clips)


def _intervals(video: dict, where: str, n_frames: int) -> tuple[Interval, ...]:
    intervals = []
    previous_end = 0
    for i_i, interval in enumerate(require(video, "intervals", list, where)):
        iw = f"{where}.intervals[{i_i}]"
        s = require(interval, "start_frame", int, iw)
        e = require(interval, "end_frame", int, iw)
        if not 0 <= s < e <= n_frames:
            raise DataError(f"{iw}: frames [{s}, {e}) must satisfy 0 <= start < end <= {n_frames}")
        if s < previous_end:
            raise DataError(f"{iw} starts at frame {s}, before the previous interval ends")
        previous_end = e
        s_s = require(interval, "start_s", float, iw)
        e_s = require(interval, "end_s", float, iw)
        if s_s > e_s:  # equal only with duplicated timestamps in the source
            raise DataError(f"{iw}: start_s {s_s} is after end_s {e_s}")
        score = unit(interval, "score", iw)
        intervals.append(Interval(s, e, s_s, e_s, score, optional_unit(interval, "calibrated_score", iw)))
    return tuple(intervals)


def _video(video: Any, where: str) -> VideoIntervals:
    source = require(video, "source", str, where)
    duration = require(video, "duration_s", float, where)
    fps = require(video, "fps", float, where)
    if fps <= 0:
        raise DataError(f"{where}.fps must be > 0")
    n_frames = require(video, "n_frames", int, where)
    clip_len = require(video, "clip_len", int, where)
    if clip_len < 1:
        raise DataError(f"{where}.clip_len must be >= 1")
    if duration < 0 or n_frames < 0:
        raise DataError(f"{where}: duration_s and n_frames must be >= 0")
    video_score = unit(video, "video_score", where)
    probability = optional_unit(video, "video_probability", where)
    clips = _clips(video, where)
    intervals = _intervals(video, where, n_frames)
    ood = video.get("ood")
    validate_ood_entry(ood, f"{where}.ood", n_clips=len(clips))
    return VideoIntervals(
        source=source,
        duration_s=duration,
        fps=fps,
        n_frames=n_frames,
        clip_len=clip_len,
        video_score=video_score,
        clips=clips,
        intervals=intervals,
        video_probability=probability,
        ood=None if ood is None else VideoOOD(tuple(ood["clip_distances"]), ood["clip_threshold"], ood["max_share"]),
    )


def _listed(doc: dict, key: str, kind: type, field_name: str) -> tuple[Any, ...]:
    entries = require(doc, key, list, "document", default=[])
    return tuple(
        kind(require(e, "source", str, f"{key}[{i}]"), require(e, field_name, str, f"{key}[{i}]"))
        for i, e in enumerate(entries)
    )


def validate_document(doc: dict[str, Any]) -> IntervalsDocument:
    """Check a loaded intervals document against schema version 1 and return it typed.

    Raises:
        DataError: on the first problem, naming where it is (e.g. ``videos[0].intervals[2].end_frame``).
    """
    version = require(doc, "schema_version", int, "document")
    if version != SCHEMA_VERSION:
        raise DataError(f"document.schema_version is {version}, this vadpipe reads {SCHEMA_VERSION}")
    op = _operating_point(require(doc, "operating_point", dict, "document"))
    videos = tuple(_video(v, f"videos[{i}]") for i, v in enumerate(require(doc, "videos", list, "document")))
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise DataError(f"document.model must be a path or null, got {model!r}")
    return IntervalsDocument(
        videos=videos,
        operating_point=op,
        model=model,
        not_scored=_listed(doc, "not_scored", NotScored, "reason"),
        damaged=_listed(doc, "damaged", DamagedVideo, "damage"),
    )


def read_intervals(path: str | os.PathLike) -> IntervalsDocument:
    """Read and validate an intervals JSON file.

    Raises:
        DataError: unreadable, not JSON, or not an intervals document (naming the first bad field).
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not an intervals JSON: {exc}") from None
    try:
        return validate_document(obj)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


# --- writing ---------------------------------------------------------------------------------


def intervals_json(doc: IntervalsDocument | dict[str, Any]) -> str:
    """The validated JSON text of a document (a dataclass or its dict), without the final newline."""
    obj = document_to_dict(doc) if isinstance(doc, IntervalsDocument) else doc
    validate_document(obj)
    return json.dumps(obj, indent=2, allow_nan=False)


def write_intervals(path: str | os.PathLike, doc: IntervalsDocument | dict[str, Any]) -> Path:
    """Validate and atomically write an intervals document (a dataclass or its dict)."""
    atomic_write_text(Path(path), intervals_json(doc) + "\n")
    return Path(path)
