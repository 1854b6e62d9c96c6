"""``detect`` orchestration: videos -> cached I3D features -> trained model -> anomalous intervals.

The only module besides the CLI that knows every stage. Features come from the extractor and
its cache with exactly the run's extraction settings (a video extracted before with the same
settings is not decoded again); a request that contradicts those settings is refused, since a
model only understands features made the way its training features were.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vadpipe.errors import CheckpointError, ConfigError
from vadpipe.executor_choice import choose_executor
from vadpipe.extract import cache
from vadpipe.extract.backbones import BACKBONES, IMAGENET, get_backbone
from vadpipe.extract.discovery import find_videos
from vadpipe.extract.encoder import ClipEncoder, load_encoder, select_device
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.procs import default_workers
from vadpipe.extract.results import ExtractReport, VideoResult
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.extract.weights import resolve_backbone
from vadpipe.model.ood import FeatureDistance, load_distance
from vadpipe.model.provenance import run_backbone
from vadpipe.model.run import Run
from vadpipe.model.scoring import SequenceModel, score_video
from vadpipe.postprocess.frame_intervals import build_video_intervals, frame_span_to_seconds
from vadpipe.postprocess.intervals import DamagedVideo, IntervalsDocument, NotScored, OperatingPoint, VideoIntervals
from vadpipe.postprocess.ood import judge_video, outside_line
from vadpipe.postprocess.proposals import interpolate_to_frames

__all__ = [
    "DetectResult",
    "encoder_for",
    "run_extraction_settings",
    "score_intervals",
    "detect_videos",
    "detection_document",
    "plot_video",
]


@dataclass
class DetectResult:
    document: IntervalsDocument
    extract_report: ExtractReport
    too_short: list[VideoResult] = field(default_factory=list)
    failed: list[VideoResult] = field(default_factory=list)
    entries: dict[str, cache.CacheEntry] = field(default_factory=dict)  # source -> its entry, as the job returned it
    distance: FeatureDistance | None = None  # the run's outside-footage check; None: it cannot judge


def run_extraction_settings(run: Run, *, backbone: str | None = None, **requested) -> ExtractionSettings:
    """The extraction settings the run was trained on, checked against any explicitly requested.

    ``requested`` holds settings the user asked for (None = not asked); any that differ from the
    run's are refused with a message naming both values. ``backbone`` (detect --backbone) names
    the I3D network for a run that does not know its features' network; vadpipe never guesses it.
    """
    ext = run.config.extraction
    known = run_backbone(run.config.sections)
    if backbone is not None and known is not None and backbone != known:
        raise ConfigError(
            f"the model in {run.path} was trained on {known} features; --backbone {backbone} would "
            f"extract with another network (drop it, or train a model on {backbone} features)"
        )
    if known is None and backbone is None:
        raise ConfigError(
            f"the model in {run.path} was trained on features of unknown origin (no vadpipe records and no "
            f"train --backbone), so vadpipe will not guess which I3D network to extract with: pass --backbone "
            f"{IMAGENET.id} if they were the released XD-Violence or UCF-Crime I3D features, else the network "
            f"that made them ({', '.join(BACKBONES)})"
        )
    if ext and ext.get("settings"):
        try:
            settings = ExtractionSettings.from_dict(ext["settings"])
        except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise CheckpointError(
                f"{run.path}/config.json holds unusable extraction settings ({exc}); "
                "is it a vadpipe run of this version?"
            ) from None
    else:
        chosen = known or backbone
        profile = "the xd-violence profile" if chosen == IMAGENET.id else "vadpipe's default extraction settings"
        warnings.warn(
            f"run {run.path} was trained on feature files without extraction records (e.g. the released "
            f"XD-Violence features); extracting with {chosen} and assuming {profile}",
            stacklevel=2,
        )
        settings = (
            ExtractionSettings.profile("xd-violence") if chosen == IMAGENET.id else ExtractionSettings(backbone=chosen)
        )
    asked = {k: v for k, v in requested.items() if v is not None}
    clashes = [f"{k}={v!r} (model: {getattr(settings, k)!r})" for k, v in asked.items() if getattr(settings, k) != v]
    if clashes:
        raise ConfigError(
            f"the model in {run.path} was trained on features extracted with other settings: "
            f"{', '.join(clashes)}; drop these options or train a model on such features"
        )
    return settings


def encoder_for(
    settings: ExtractionSettings, *, weights: Path | None, device: str | None
) -> tuple[ClipEncoder, ExtractionSettings]:
    found = resolve_backbone(weights) if weights is not None else resolve_backbone(backbone=settings.backbone)
    if found.backbone.id != settings.backbone:
        raise ConfigError(
            f"the model was trained on {settings.backbone} features, but --weights {weights} is "
            f"{found.backbone.id}: detect extracts only with the model's network; pass "
            f"{settings.backbone} weights ({get_backbone(settings.backbone).checkpoint})"
        )
    encoder, loaded = load_encoder(settings, device=device, resolved=found)
    if settings.device_type and loaded.device_type != settings.device_type:
        raise ConfigError(
            f"the model was trained on bf16 features computed on {settings.device_type}; on "
            f"{encoder.device} bf16 computes other numbers: pass --device {settings.device_type}"
        )
    if settings.weights_sha256 and settings.weights_sha256 != loaded.weights_sha256:
        raise ConfigError(
            f"the model was trained on features from I3D weights {settings.weights_sha256[:12]}..., but the "
            f"weights at hand are {loaded.weights_sha256[:12]}...; pass the training weights with --weights"
        )
    return encoder, loaded


def score_intervals(
    model: SequenceModel,
    crops: Sequence[np.ndarray],
    *,
    source: str,
    block_len: int,
    start_frames: np.ndarray,
    clip_len: int,
    frame_times_s: np.ndarray,
    duration_s: float,
    fps: float,
    operating_point: OperatingPoint,
) -> VideoIntervals:
    """One video's document entry from its crops' features: `score_video` at full rate (every clip
    one score, the crops' weighted T-CAMs averaged), cut into intervals at ``operating_point``."""
    scores = score_video(model, crops, mode="full", block_len=block_len)
    return build_video_intervals(
        source=source,
        attention=scores.attention,
        tcam=scores.tcam,
        wtcam=scores.wtcam,
        video_score=scores.video_score,
        start_frames=start_frames,
        clip_len=clip_len,
        frame_times_s=frame_times_s,
        duration_s=duration_s,
        fps=fps,
        video_end_s=duration_s,
        operating_point=operating_point,
    )


def detect_videos(
    paths: list[Path],
    run: Run,
    *,
    cache_dir: Path,
    settings: ExtractionSettings,
    operating_point: OperatingPoint,
    weights: Path | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    encoder: ClipEncoder | None = None,
) -> DetectResult:
    """Extract (or reuse) features of ``paths`` with ``settings`` and cut intervals with the run's model.

    Every video is scored by `score_intervals` (full rate, the crops' weighted T-CAMs
    averaged). A ready ``encoder``
    (with ``settings.weights_sha256`` set) avoids loading I3D again.
    """
    found = find_videos(paths)  # walked once: extract_videos takes what was found
    if not found.sources:  # nothing to decode (missing or no videos): extract_videos says so
        encoder = None
    elif encoder is None or not settings.weights_sha256:
        encoder, settings = encoder_for(settings, weights=weights, device=device)
    dev = encoder.device if encoder is not None else select_device(device, runtime=settings.runtime)  # resolved once
    # the entry point of `vadpipe extract`, on the executor it would choose for this device
    report = extract_videos(
        found,
        out_dir=cache_dir,
        settings=settings,
        executor=choose_executor(device=device, decode_processes=default_workers(dev)),
        encoder=encoder,
        batch_size=batch_size,
        progress=progress,
    )
    if report.interrupted:  # Ctrl-C during extraction: the finished videos are cached, score nothing
        raise KeyboardInterrupt
    result = DetectResult(
        document=IntervalsDocument(operating_point=operating_point, videos=()),
        extract_report=report,
        distance=load_distance(run.path),
    )
    videos: list[VideoIntervals] = []
    block_len = run.config.block_len
    for r in report.results:
        if r.status == "failed":
            result.failed.append(r)
            continue
        if r.entry is None:  # a duplicate of a video that failed
            raise CheckpointError(f"cache record of {r.source} vanished from {cache_dir} during the run")
        record = r.entry.record
        if record.clips.count == 0:
            result.too_short.append(r)
            continue
        # the job wrote these files or verified their hashes: read once, not hashed again
        crops = [cache.load_features(cache_dir, record, c, verify=False) for c in range(len(record.crops))]
        videos.append(
            score_intervals(
                run.model,
                crops,
                source=r.source,
                block_len=block_len,
                start_frames=np.asarray(record.clips.start_frames),
                clip_len=record.clips.length,
                frame_times_s=r.entry.frame_times,
                duration_s=record.video.duration_s,
                fps=record.video.fps,
                operating_point=operating_point,
            )
        )
        if result.distance is not None:  # is this footage like the training footage?
            videos[-1] = replace(videos[-1], ood=judge_video(result.distance, crops))
        result.entries[r.source] = r.entry
    result.document = replace(result.document, videos=tuple(videos))
    return result


def plot_video(
    path: Path,
    video: VideoIntervals,
    entry: cache.CacheEntry,
    *,
    threshold: float,
    low: float,
    high: float,
    ground_truth_frames: list[tuple[int, int]] | None = None,
) -> Path:
    """Score curves at frame rate over real time, detected intervals, and ground truth if known
    (the frame times are the entry's, as the job returned them)."""
    from vadpipe.postprocess.plot import plot_scores

    clip_len = video.clip_len
    record, times = entry.record, entry.frame_times
    starts = np.asarray(record.clips.start_frames)
    frame_idx = (starts[:, None] + np.arange(clip_len)[None]).reshape(-1)

    def curve(name: str, low: float, high: float) -> np.ndarray:
        values = np.array([getattr(c, name) for c in video.clips], dtype=np.float32)
        return interpolate_to_frames(values, clip_len=clip_len, low=low, high=high)

    curves = {
        "attention": curve("attention", 0.0, 1.0),
        "tcam": curve("tcam", 0.0, 1.0),
        "wtcam": curve("wtcam", low, high),
    }
    gt = None
    if ground_truth_frames is not None:
        end = record.video.duration_s
        gt = [
            frame_span_to_seconds(min(s, len(times) - 1), min(e, len(times)), frame_times_s=times, video_end_s=end)
            for s, e in ground_truth_frames
            if s < len(times)
        ]
    outside, warning = [], None
    if video.ood is not None:
        outside = [
            frame_span_to_seconds(int(s), int(s) + clip_len, frame_times_s=times, video_end_s=record.video.duration_s)
            for s, out in zip(starts, video.ood.clips_outside)
            if out
        ]
        warning = outside_line(Path(video.source).name, video.ood) if video.ood.outside else None
    return plot_scores(
        path,
        times_s=times[frame_idx],
        curves=curves,
        threshold=threshold,
        intervals=list(video.intervals),
        ground_truth=gt,
        title=Path(video.source).name,
        outside=outside,
        warning=warning,
    )


def detection_document(result: DetectResult, *, model: Path) -> IntervalsDocument:
    """The intervals document of a detection: its videos, the model, and what it could not score
    or found damaged (each result carries its entry's damage, decoded now or found in the cache)."""
    not_scored = [NotScored(r.source, "too short: fewer frames than one clip") for r in result.too_short]
    not_scored += [NotScored(r.source, r.error) for r in result.failed]
    damaged = tuple(DamagedVideo(r.source, r.damage) for r in result.extract_report.results if r.damage)
    return replace(result.document, model=str(model), not_scored=tuple(not_scored), damaged=damaged)
