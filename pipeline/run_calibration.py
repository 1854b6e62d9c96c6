"""Choosing and storing a trained run's operating point on the videos it held out.

`calibrate_run` scores the held-out videos with the model that never trained on them (the run's
own, or for a cross-fitted ensemble each fold's member), chooses the thresholds, fits the score
calibrations and writes them into the run's ``config.json``. Both ways to train a run use it:
`vadpipe.calibrated_training` (one model) and `vadpipe.ensemble_training` (K members); see
`vadpipe.postprocess.calibration` for how thresholds are chosen.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vadpipe.errors import CheckpointError, ConfigError
from vadpipe.model.data import FeatureSet, load_item
from vadpipe.model.labels import open_training_set, parse_annotations
from vadpipe.model.run import Run, load_run, read_run_config, write_json
from vadpipe.model.scoring import score_video
from vadpipe.postprocess.calibration import (
    CALIBRATION_METHODS,
    F1_IOU_THRESHOLD,
    OPERATING_METHODS,
    CalibrationWarning,
    HeldoutVideo,
    choose_operating_point,
    fit_calibrator,
    heldout_detections,
)
from vadpipe.postprocess.decisions import VideoDetections, match_intervals
from vadpipe.postprocess.evaluate import group_videos
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.proposals import interpolate_to_frames
from vadpipe.postprocess.reliability import calibration_quality, detections_summary, plot_reliability

__all__ = [
    "RELIABILITY_FILE",
    "CalibrationSpec",
    "calibrate_run",
    "heldout_videos",
    "fixed_operating_point",
    "store_operating_point",
]

RELIABILITY_FILE = "reliability.png"
_CROSS_FIT_NOTE = (
    "every training video was scored by the cross-fitted member that held it out; the thresholds "
    "were chosen on those out-of-fold curves and apply to the members' mean curve, whose normal-video "
    "peaks are lower: false alarms at or below the held-out rate"
)
_MODEL_NOTE = (
    "the run's weights were trained without the held-out videos; the thresholds and calibrations "
    "were measured on exactly these weights"
)


@dataclass(frozen=True)
class CalibrationSpec:
    """How to hold out videos and choose the operating point.

    Args:
        holdout_fraction: share of each class's training videos held out (0 < f < 1).
        operating_point: ``"false_alarms"`` (at most ``target_false_alarm_rate`` of held-out
            normal videos get an interval) or ``"f1"`` (best interval F1 at IoU 0.3; needs
            ``annotations``).
        target_false_alarm_rate: for ``"false_alarms"``.
        annotations: frame annotations of the training videos (XD-Violence
            ``annotations.txt``); with them interval scores are calibrated against real hits
            and the held-out interval F1 is reported.
        method: ``"platt"`` or ``"isotonic"`` score calibration.
    """

    holdout_fraction: float = 0.25
    operating_point: str = "false_alarms"
    target_false_alarm_rate: float = 0.05
    annotations: Path | None = None
    method: str = "platt"

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        if self.operating_point not in OPERATING_METHODS:
            raise ConfigError(
                f"operating_point must be one of {', '.join(OPERATING_METHODS)}, got {self.operating_point!r}"
            )
        if not 0.0 <= self.target_false_alarm_rate < 1.0:
            raise ConfigError(f"target_false_alarm_rate must lie in [0, 1), got {self.target_false_alarm_rate}")
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}"
            )
        if self.operating_point == "f1" and self.annotations is None:
            raise ConfigError("the f1 operating point needs frame annotations of the training videos")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["annotations"] = str(Path(self.annotations).resolve()) if self.annotations else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationSpec:
        values = {
            k: data[k]
            for k in ("holdout_fraction", "operating_point", "target_false_alarm_rate", "annotations", "method")
            if k in data
        }
        if values.get("annotations"):
            values["annotations"] = Path(values["annotations"])
        return cls(**values)


def fixed_operating_point() -> dict[str, Any]:
    """The run-config entry of a run trained on every video: the paper's fixed threshold."""
    return {
        "method": "fixed",
        "threshold": OperatingPoint().threshold,
        "video_threshold": 0.0,
        "target_false_alarm_rate": None,
        "video_calibration": None,
        "interval_calibration": None,
        "note": "trained on every training video, none held out: the paper's fixed threshold 0.35, "
        "no video gate, no calibration",
    }


def _heldout_set(data: FeatureSet, videos: Collection[str], where: Path) -> FeatureSet:
    wanted = set(videos)
    missing = sorted(wanted - set(data.videos))
    if missing:
        raise CheckpointError(f"{where}: held-out video(s) {', '.join(missing[:5])} are no longer in {data.root}")
    return replace(data, items=tuple(item for item in data.items if item.video in wanted))


def heldout_videos(
    model: Any, data: FeatureSet, annotations: Mapping[str, list] | None, *, block_len: int
) -> list[HeldoutVideo]:
    """Score every video of ``data`` exactly as `vadpipe detect` does (`score_video` at full rate,
    with ``model``: the run's, or the cross-fitted member that held the videos out), its curve
    zoomed to frame rate."""
    labels = {item.video: int(item.label) for item in data.items}
    videos = []
    for video in group_videos(data):
        arrays = [load_item(item, feature_dim=data.feature_dim) for item in video.crops]
        scores = score_video(model, arrays, mode="full", block_len=block_len)
        curve = interpolate_to_frames(scores.wtcam, clip_len=video.clip_len)
        frames = (video.start_frames[:, None] + np.arange(video.clip_len)[None, :]).ravel()
        truth = None
        if annotations is not None:
            key = next((n for n in video.names if n in annotations), None)
            if key is not None or not labels[video.name]:
                truth = tuple(annotations.get(key, ()))
        videos.append(HeldoutVideo(video.name, labels[video.name], scores.video_score, curve, frames, truth))
    return videos


def _out_of_fold(
    run: Run, request: Mapping[str, Any], data: FeatureSet, annotations: Mapping[str, list] | None, where: Path
) -> tuple[list[HeldoutVideo], list[str]]:
    """The held-out videos scored by the model that never trained on them: the run's own, or for a
    cross-fitted ensemble (``request["folds"]``) each fold by its member."""
    block_len = run.config.block_len
    if "folds" not in request:
        names = list(request["heldout_videos"])
        return heldout_videos(run.model, _heldout_set(data, names, where), annotations, block_len=block_len), names
    members = list(run.model.members)
    videos, names = [], []
    for fold in request["folds"]:
        member = int(fold["member"])
        if not 0 <= member < len(members):
            raise CheckpointError(f"{where}: calibration fold of member {member}, but the run has {len(members)}")
        fold_names = list(fold["videos"])
        videos += heldout_videos(
            members[member], _heldout_set(data, fold_names, where), annotations, block_len=block_len
        )
        names += fold_names
    return videos, names


def _interval_examples(
    videos: Sequence[HeldoutVideo], detections: Sequence[VideoDetections], with_truth: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out (interval score, 0/1) pairs: 1 = matched an annotated interval at IoU 0.3
    (``with_truth``), else 1 = the interval lies in an anomalous video."""
    scores, labels = [], []
    for video, found in zip(videos, detections):
        if with_truth:
            hits = {
                i
                for i, _ in match_intervals(
                    found.intervals, found.scores, video.truth or (), iou_threshold=F1_IOU_THRESHOLD
                )
            }
        else:
            hits = set(range(len(found.intervals))) if video.label else set()
        scores += list(found.scores)
        labels += [int(i in hits) for i in range(len(found.intervals))]
    return np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def calibrate_run(run_dir: Path | str, *, data: FeatureSet | None = None) -> dict[str, Any] | None:
    """Choose and store the operating point of a trained run on its held-out videos.

    Reads the run's ``calibration`` request (written by `train_calibrated`), scores the
    held-out videos with the run's weights, chooses the thresholds, fits the video and
    interval calibrations, and writes ``operating_point`` into ``config.json`` and
    ``reliability.png`` into the run folder. A run without a request is left alone (None).

    Args:
        data: the opened training feature set, to avoid reading it again (None: re-open it
            from the run's recorded path, labels and crops).

    Returns:
        The stored operating point entry, or None.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    request = run.config.calibration
    if not request:
        return None
    where = run_dir / "config.json"
    try:
        spec = CalibrationSpec.from_dict(request)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: unusable calibration request: {exc}") from None
    if data is None:
        recorded = run.config.data or {}
        data = open_training_set(
            recorded["path"], labels_csv=recorded.get("labels_csv"), crops=recorded.get("crops_requested")
        )
    annotations = parse_annotations(spec.annotations) if spec.annotations else None
    try:
        videos, heldout_names = _out_of_fold(run, request, data, annotations, where)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: unusable calibration request: {exc}") from None
    choice = choose_operating_point(
        videos, method=spec.operating_point, target_false_alarm_rate=spec.target_false_alarm_rate
    )
    detections = heldout_detections(videos, choice)

    video_scores = np.array([v.video_score for v in videos])
    video_labels = np.array([v.label for v in videos], dtype=np.int64)
    video_cal = fit_calibrator(video_scores, video_labels, method=spec.method, of="the video is anomalous")
    with_truth = annotations is not None and all(v.truth is not None for v in videos)
    if annotations is not None and not with_truth:
        unannotated = [v.name for v in videos if v.truth is None]
        warnings.warn(
            f"{len(unannotated)} held-out anomalous video(s) are not in {spec.annotations} "
            f"(e.g. {unannotated[0]}); interval scores are calibrated on video labels only",
            CalibrationWarning,
            stacklevel=2,
        )
    interval_scores, interval_labels = _interval_examples(videos, detections, with_truth)
    interval_of = (
        "the interval overlaps an annotated anomaly at IoU >= 0.3"
        if with_truth
        else "the interval lies in an anomalous video (an upper bound on its precision)"
    )
    interval_cal = fit_calibrator(interval_scores, interval_labels, method=spec.method, of=interval_of)

    entry = {
        "method": choice.method,
        "threshold": choice.threshold,
        "video_threshold": choice.video_threshold,
        "target_false_alarm_rate": choice.target_false_alarm_rate,
        "video_probability_at_video_threshold": (
            float(video_cal(np.array([choice.video_threshold]))[0]) if choice.video_threshold > 0 else None
        ),
        "frame_level": choice.frame_level,
        "video_calibration": video_cal.to_dict(),
        "interval_calibration": interval_cal.to_dict(),
        "calibration_quality": {
            "video": calibration_quality(video_scores, video_labels, spec.method),
            "interval": calibration_quality(interval_scores, interval_labels, spec.method),
        },
        "heldout": {**detections_summary(videos, choice), "videos": heldout_names},
        "holdout_fraction": spec.holdout_fraction,
        "seed": request.get("seed"),
        "calibration_method": spec.method,
        "annotations": str(spec.annotations) if spec.annotations else None,
        "model": _CROSS_FIT_NOTE if "folds" in request else _MODEL_NOTE,
        "notes": list(choice.notes),
    }
    store_operating_point(run_dir, entry)
    plot_reliability(
        run_dir / RELIABILITY_FILE,
        [
            ("video score -> P(video is anomalous)", video_scores, video_labels, video_cal, spec.method),
            (
                "interval score -> P(" + ("hit" if with_truth else "in an anomalous video") + ")",
                interval_scores,
                interval_labels,
                interval_cal,
                spec.method,
            ),
        ],
    )
    return entry


def store_operating_point(run_dir: Path, entry: dict[str, Any]) -> None:
    config = dict(read_run_config(run_dir).sections)
    config["operating_point"] = entry
    write_json(Path(run_dir) / "config.json", config)
