"""Evaluate a trained model over a folder of features against frame annotations (Table 1).

Feature folders are read by `vadpipe.model.data.scan_features` (test split): a vadpipe cache
(clip geometry from each record) or bare XD-Violence ``<video>__<crop>.npy`` files in
``RGBTest/`` or flat (16-frame clips from frame 0). Annotations are ``{video: [(s, e), ...]}``
half-open source-frame intervals (XD-Violence ``annotations.txt``); a video absent from them
is normal.

Besides the ranking metrics of Table 1, the report scores the decisions at the operating point
(``report["detection"]``, see `vadpipe.postprocess.decisions.detection_metrics`): by default the
run's calibrated one (video gate + curve threshold, chosen on held-out training videos by
``vadpipe train``), else the paper's fixed threshold 0.35.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.data import XD_CLIP_LEN, FeatureItem, FeatureSet, clip_geometry, load_item, scan_features
from vadpipe.model.labels import parse_annotations
from vadpipe.model.provenance import features_backbone, run_backbone
from vadpipe.model.run import load_run
from vadpipe.model.run_config import RunConfig
from vadpipe.model.scoring import SequenceModel, clip_frame_labels, score_video
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.metrics import (
    LEVEL_DEFINITIONS,
    EntryPairs,
    ProtocolName,
    csl_entry,
    pooled_metrics,
    standard_entry,
)

__all__ = [
    "XD_CLIP_LEN",
    "AP_DEFINITIONS",
    "FeatureVideo",
    "group_videos",
    "check_features_match_run",
    "video_entries",
    "evaluate_model",
    "evaluate_run",
    "json_ready",
]

AP_DEFINITIONS = {
    "ap": "sklearn.metrics.average_precision_score (step-wise; what the CSL-TAL code reports)",
    "ap_trapezoid": "sklearn.metrics.auc(recall, precision), trapezoidal PR-AUC (what XDVioDet and most papers report)",
}
_ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True, eq=False)
class FeatureVideo:
    """One video of a feature set: its crops and where its clips lie in the source video.

    Attributes:
        name: the video name (cache stem or XD file stem).
        names: names to look it up by in the annotations (`FeatureItem.names`).
        crops: its samples, one per crop.
        clip_len: frames per clip.
        start_frames: (T,) source frame where each clip starts.
    """

    name: str
    names: tuple[str, ...]
    crops: tuple[FeatureItem, ...]
    clip_len: int
    start_frames: np.ndarray


def group_videos(features: FeatureSet) -> list[FeatureVideo]:
    """Group a feature set's crop samples by video, with each video's clip geometry."""
    by_video: dict[str, list[FeatureItem]] = defaultdict(list)
    for item in features.items:
        by_video[item.video].append(item)
    videos = []
    for name, items in sorted(by_video.items()):
        first = items[0]
        clip_len, starts = clip_geometry(first)
        videos.append(FeatureVideo(name, first.names(), tuple(items), clip_len, starts))
    return videos


def _annotation_key(video: FeatureVideo, annotations: Mapping[str, Any]) -> str | None:
    return next((name for name in video.names if name in annotations), None)


def _warn_label_conflicts(labels: Mapping[str, int]) -> None:
    """XD-Violence names carry the label (``_label_A`` = normal): flag disagreements with the
    annotations, the usual sign of a wrong annotations file or a renamed video."""
    normal_but_annotated = [n for n, y in labels.items() if y and "_label_A" in n]
    violent_unannotated = [n for n, y in labels.items() if not y and "_label_" in n and "_label_A" not in n]
    for names, what in (
        (normal_but_annotated, "are annotated but named as normal (_label_A)"),
        (violent_unannotated, "are named as violent but absent from the annotations (evaluated as normal)"),
    ):
        if names:
            warnings.warn(f"{len(names)} videos {what}, e.g. {names[0]}", stacklevel=3)


def _check_options(
    *, protocol: str, threshold: float | None, parity_q11: bool, video_threshold: float | None = 0.0
) -> None:
    if protocol not in LEVEL_DEFINITIONS:
        raise ConfigError(f"protocol must be 'standard' or 'csl', got {protocol!r}")
    if parity_q11 and protocol != "csl":
        raise ConfigError("parity_q11 applies only to the csl protocol")
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    if video_threshold is not None and not 0.0 <= video_threshold <= 1.0:
        raise ConfigError(f"video_threshold must lie in [0, 1], got {video_threshold!r}")


def video_entries(
    model: SequenceModel,
    features: FeatureSet,
    video: FeatureVideo,
    truth: Sequence[tuple[int, int]] | None,
    *,
    protocol: ProtocolName,
    threshold: float,
    video_threshold: float,
    block_len: int,
    parity_q11: bool = False,
) -> list[EntryPairs]:
    """One video's entries: the video under "standard" (its `score_video` curve), each crop
    under "csl" (the authors' protocol). ``truth``: its annotated intervals (None: normal)."""
    label = int(truth is not None)
    frame_labels = clip_frame_labels(truth or (), start_frames=video.start_frames, clip_len=video.clip_len)
    crops = [load_item(item, feature_dim=features.feature_dim) for item in video.crops]
    mode = "csl" if protocol == "csl" else "full"
    scores = score_video(model, crops, mode=mode, block_len=block_len, parity_q11=parity_q11)
    decisions = {
        "threshold": threshold,
        "video_threshold": video_threshold,
        "start_frames": video.start_frames,
        "truth": truth or (),
    }
    if protocol == "csl":
        return [csl_entry(s.wtcam, s.rows, s.video_score, label, frame_labels, **decisions) for s in scores.crops]
    return [standard_entry(scores.wtcam, scores.video_score, label, frame_labels, **decisions)]


def evaluate_model(
    model: SequenceModel,
    features: FeatureSet,
    annotations: Mapping[str, Sequence[tuple[int, int]]],
    *,
    protocol: ProtocolName = "standard",
    threshold: float = 0.35,
    video_threshold: float = 0.0,
    block_len: int = 3,
    parity_q11: bool = False,
    progress: _ProgressFn | None = None,
) -> dict[str, Any]:
    """Score every video and compute the four Table-1 levels under ``protocol``, and the
    decisions at the operating point (``threshold``, ``video_threshold``).

    Args:
        model: the trained network in eval mode (see `score_sequences`).
        features: from `vadpipe.model.data.scan_features` (``split="test"``).
        annotations: ``{name: [(s, e), ...]}`` anomalous half-open source-frame intervals;
            videos absent from it are normal.
        protocol: "standard" (all clips, crops averaged by `score_video`) or "csl" (the
            authors' protocol, every crop its own entry).
        threshold: curve threshold of the proposals (proposal-frame level and decisions).
        video_threshold: video gate: entries whose video score is below it report no
            interval (their proposal-frame scores are 0).
        block_len: the training block length L (the "full" phases, the "csl" subsampling).
        parity_q11: "csl" only: the authors' handling of sequences with T <= 2L.
        progress: called as ``progress(done, total, name)`` after each video.

    Returns:
        `pooled_metrics`' dict (with ``detection``) plus ``threshold``, ``video_threshold``,
        ``block_len``, ``counts`` and ``definitions`` (what each level and AP pairs).
    """
    _check_options(protocol=protocol, threshold=threshold, parity_q11=parity_q11, video_threshold=video_threshold)
    videos = group_videos(features)
    entries: list[EntryPairs] = []
    labels: dict[str, int] = {}
    used_keys: set[str] = set()
    for done, video in enumerate(videos, start=1):
        key = _annotation_key(video, annotations)
        labels[video.name] = int(key is not None)
        if key is not None:
            used_keys.add(key)
        entries.extend(
            video_entries(
                model,
                features,
                video,
                annotations.get(key),
                protocol=protocol,
                threshold=threshold,
                video_threshold=video_threshold,
                block_len=block_len,
                parity_q11=parity_q11,
            )
        )
        if progress is not None:
            progress(done, len(videos), video.name)

    _warn_label_conflicts(labels)
    unmatched = sorted(set(annotations) - used_keys)
    if unmatched:
        warnings.warn(
            f"{len(unmatched)} annotated videos have no features here, e.g. {unmatched[0]}",
            stacklevel=2,
        )
    report = pooled_metrics(entries, protocol=protocol)
    report["threshold"] = threshold
    report["video_threshold"] = video_threshold
    report["block_len"] = block_len
    report["counts"] = {
        "videos": len(videos),
        "anomalous_videos": sum(labels.values()),
        "entries": len(entries),
    }
    report["definitions"] = {**LEVEL_DEFINITIONS[protocol], **AP_DEFINITIONS}
    return report


def check_features_match_run(config: RunConfig, features: FeatureSet) -> None:
    """Refuse features the run's model was not trained for (width, extraction settings)."""
    feature_dim = config.model.feature_dim
    if features.feature_dim != feature_dim:
        raise DataError(
            f"the features in {features.root} have width {features.feature_dim}, the model expects {feature_dim}"
        )
    run_key = (config.extraction or {}).get("settings_key")
    key = (features.extraction or {}).get("settings_key")
    if run_key is not None and key is not None and key != run_key:
        raise ConfigError(
            f"the model was trained on features with extraction settings {run_key}, but "
            f"{features.root} holds features extracted with {key}; extract the test videos "
            "with the run's settings"
        )
    trained, given = run_backbone(config.sections), features_backbone(features.extraction)
    if trained is not None and given is not None and trained != given:
        raise ConfigError(
            f"the model was trained on {trained} features, but {features.root} holds {given} features (another "
            f"I3D network: every feature differs); extract the test videos with --backbone {trained}"
        )
    if ((features.extraction or {}).get("settings") or {}).get("fps") is not None:
        warnings.warn(
            f"the features in {features.root} were extracted at a resampled frame rate: clip "
            "frames are not the source frames the annotations count",
            stacklevel=2,
        )


def evaluate_run(
    run_dir: str | Path,
    features_dir: str | Path,
    annotations_file: str | Path,
    *,
    protocol: ProtocolName = "standard",
    threshold: float | None = None,
    video_threshold: float | None = None,
    parity_q11: bool = False,
    progress: _ProgressFn | None = None,
) -> dict[str, Any]:
    """Load a run folder and evaluate it on a feature folder; see `evaluate_model`.

    The block length is the run's training one. Without ``threshold`` and ``video_threshold``
    the run's saved operating point is used (`OperatingPoint.for_run`: the calibrated one, or
    the paper's 0.35 without a gate); giving either makes a manual one (``threshold`` alone:
    no gate, the paper's rule). The report also names the run, the feature folder, the
    annotations file and the operating point.
    """
    _check_options(
        protocol=protocol, threshold=threshold, parity_q11=parity_q11, video_threshold=video_threshold
    )  # before loading
    run = load_run(run_dir)
    op = OperatingPoint.for_run(
        run.config.operating_point,
        where=f"{run.path}/config.json",
        threshold=threshold,
        video_threshold=video_threshold,
    )
    annotations = parse_annotations(annotations_file)
    features = scan_features(features_dir, split="test")
    check_features_match_run(run.config, features)
    block_len = run.config.block_len
    report = evaluate_model(
        run.model,
        features,
        annotations,
        protocol=protocol,
        threshold=op.threshold,
        video_threshold=op.video_threshold,
        block_len=block_len,
        parity_q11=parity_q11,
        progress=progress,
    )
    report["operating_point"] = {
        k: v for k, v in op.to_dict().items() if k not in ("video_calibration", "interval_calibration")
    }
    report["parity_q11"] = parity_q11
    report["model"] = str(run.path)
    report["features"] = str(features.root)
    report["annotations"] = str(Path(annotations_file))
    return report


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None, so it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj
