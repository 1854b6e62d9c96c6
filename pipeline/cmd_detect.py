"""``vadpipe detect``: anomalous time intervals of new videos, as JSON and plots."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vadpipe.cli_options import Alias, Command, option, trained_run_option
from vadpipe.extract.backbones import BACKBONES
from vadpipe.extract.fileio import check_output_file
from vadpipe.extract.settings import CROP_MODES
from vadpipe.ood_cli import ood_option, report_outside
from vadpipe.workspace import features_dir, runs_dir

if TYPE_CHECKING:
    pass

__all__ = ["detect"]


def _unit_interval(ctx, param, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must lie in [0, 1], got {value}")
    return value


@click.command(cls=Command)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@trained_run_option
@option(
    "--json",
    "out",
    group="Output",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    help="Write the intervals JSON here ('-' for stdout).",
)
@click.option("--out", cls=Alias, target="out", use="--json", type=click.Path(path_type=Path, allow_dash=True))
@option(
    "--threshold",
    group="Operating point",
    type=float,
    default=None,
    callback=_unit_interval,
    help="Curve threshold on the weighted T-CAM, in [0, 1], instead of the run's calibrated operating "
    "point; alone it means no video gate (0.35: the paper's rule) [default: the run's, else 0.35].",
)
@option(
    "--video-threshold",
    group="Operating point",
    type=float,
    default=None,
    callback=_unit_interval,
    help="Video gate instead of the run's: a video whose video score is below it gets no interval "
    "(0: no gate) [default: the run's, else 0].",
)
@option(
    "--min-duration",
    group="Operating point",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Drop intervals shorter than this many seconds.",
)
@option(
    "--merge-gap",
    group="Operating point",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Merge intervals separated by at most this many seconds.",
)
@option(
    "--plot",
    "plot",
    group="Output",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG file (one video) or folder (one <video>.png each) of score curves and intervals.",
)
@option(
    "--annotations",
    group="Input",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Ground truth to draw on the plots and the report (XD-Violence annotations.txt format, frame intervals).",
)
@option(
    "--report",
    "report_dir",
    group="Output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write a review folder here (as vadpipe report with its defaults: proxies where needed).",
)
@option(
    "--features",
    "cache_dir",
    group="Input",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Feature cache to reuse and fill [default: the workspace's features/].",
)
@click.option(
    "--cache", cls=Alias, target="cache_dir", use="--features", type=click.Path(file_okay=False, path_type=Path)
)
@option(
    "--crops",
    group="Model",
    type=click.Choice(CROP_MODES),
    default=None,
    help="Must match the model's training features (refused otherwise)  [default: the run's].",
)
@option(
    "--clip-len",
    group="Model",
    type=int,
    default=None,
    help="Must match the model's training features  [default: the run's].",
)
@option(
    "--fps",
    group="Model",
    type=float,
    default=None,
    help="Must match the model's training features  [default: the run's].",
)
@option(
    "--weights",
    group="Model",
    type=click.Path(path_type=Path),
    default=None,
    help="I3D weights (see vadpipe extract); must be the network of the model's features.",
)
@option(
    "--backbone",
    group="Model",
    type=click.Choice(list(BACKBONES)),
    default=None,
    help="The I3D network of the model's training features, for a run that does not record it (trained "
    "on bare feature files without --backbone); refused if the run records another.",
)
@option("--device", group="Where it runs", default="auto", help="auto, cpu, cuda or cuda:N.")
@option("--i3d-batch", group="Where it runs", type=click.IntRange(min=1), default=8, help="Crops per I3D forward pass.")
@click.option("--batch-size", cls=Alias, target="i3d_batch", use="--i3d-batch", type=click.IntRange(min=1))
@ood_option
@option("-q", "--quiet", group="Output", is_flag=True, help="No progress bar.")
def detect(
    paths: tuple[Path, ...],
    model_dir: Path | None,
    out: Path | None,
    threshold: float | None,
    video_threshold: float | None,
    min_duration: float,
    merge_gap: float,
    plot: Path | None,
    annotations: Path | None,
    report_dir: Path | None,
    cache_dir: Path | None,
    crops: str | None,
    clip_len: int | None,
    fps: float | None,
    weights: Path | None,
    backbone: str | None,
    device: str,
    i3d_batch: int,
    ood: str,
    quiet: bool,
) -> None:
    """Find the anomalous time intervals of videos (files or folders) with a trained model.

    Videos too short for one clip are listed as not scored; videos that cannot be decoded are
    reported (one line each, and in the cache's failures.jsonl) and skipped.

    A video most of whose clips are far from the training features is outside the training
    footage: its scores and probabilities are not valid; it is marked in the JSON ("ood") and on
    its plot, and --ood says what else happens.

    Exit status: 0 done (some videos may have failed), 1 every video failed, 2 bad options, an
    unusable model folder or cache, or (--ood error) a video outside the training footage, 130 interrupted.
    """
    from vadpipe.detect import detect_videos, detection_document, plot_video, run_extraction_settings
    from vadpipe.model.labels import parse_annotations
    from vadpipe.model.run import latest_run, load_run
    from vadpipe.postprocess.intervals import OperatingPoint, intervals_json, write_intervals

    truth = parse_annotations(annotations) if annotations else {}  # a bad file fails before any work
    if out is not None and str(out) != "-":
        check_output_file(out)  # an unwritable --json fails now, not after the extraction
    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise click.BadParameter(f"{report_dir} exists and is not a folder", param_hint="--report")
    run = load_run(model_dir or latest_run(runs_dir()))
    settings = run_extraction_settings(run, backbone=backbone, crops=crops, clip_len=clip_len, fps=fps)
    # The run's calibrated operating point (video gate, curve threshold, score calibrations), or --threshold's.
    op = OperatingPoint.for_run(
        run.config.operating_point,
        where=f"{run.path}/config.json",
        threshold=threshold,
        video_threshold=video_threshold,
        min_duration_s=min_duration,
        merge_gap_s=merge_gap,
    )
    cache_dir = cache_dir or features_dir()
    result = detect_videos(
        list(paths),
        run,
        cache_dir=cache_dir,
        settings=settings,
        operating_point=op,
        weights=weights,
        device=device,
        batch_size=i3d_batch,
        progress=not quiet,
    )

    doc = detection_document(result, model=run.path)
    if out is not None:
        if str(out) == "-":
            click.echo(intervals_json(doc))
        else:
            write_intervals(out, doc)

    names = Counter(Path(r.source).name for r in result.extract_report.results)

    def shown(source: str) -> str:  # the file name, or the whole path when two folders share it
        return Path(source).name if names[Path(source).name] == 1 else source

    damage = {entry.source: entry.damage for entry in doc.damaged}
    for video in result.document.videos:
        spans = ", ".join(f"{i.start_s:.2f}-{i.end_s:.2f}s ({i.score:.2f})" for i in video.intervals) or "none"
        if video.video_probability is not None:
            spans = f"P(anomalous) {video.video_probability:.2f}; intervals: {spans}"
        else:
            spans = f"intervals: {spans}"
        if video.video_score < op.video_threshold:
            spans += f" (video score below the video threshold {op.video_threshold:.3f})"
        note = (
            f" [damaged file, scored what could be decoded: {damage[video.source]}]" if video.source in damage else ""
        )
        if video.ood is not None and video.ood.outside:
            note += " [outside the training footage: see below]"
        click.secho(
            f"{shown(video.source)}: video score {video.video_score:.3f}; {spans}{note}",
            fg="yellow" if note else None,
            err=True,
        )
        if plot is not None:
            entry = result.entries[video.source]
            single = plot.suffix.lower() == ".png" and len(result.document.videos) == 1
            target = plot if single else plot / f"{entry.record.stem}.png"
            plot_video(
                target,
                video,
                entry,
                threshold=op.threshold,
                low=op.low,
                high=op.high,
                ground_truth_frames=truth.get(Path(video.source).stem, []) if annotations else None,
            )
    if annotations:
        for video in result.document.videos:
            beyond = [(s, e) for s, e in truth.get(Path(video.source).stem, []) if e > video.n_frames]
            if beyond:
                click.secho(
                    f"warning: {annotations}: {Path(video.source).stem} has {len(beyond)} interval(s) "
                    f"beyond its {video.n_frames} frames, e.g. {list(beyond[0])}; drawn clipped",
                    fg="yellow",
                    err=True,
                )
    if report_dir is not None:
        from vadpipe.review import write_report

        write_report(
            doc,
            report_dir,
            doc_path=out if out is not None and str(out) != "-" else None,
            annotations=annotations,
            proxy="auto",
            copy_sources=False,
            quiet=quiet,
        )
    for r in result.too_short:
        click.secho(f"{shown(r.source)}: too short (fewer frames than one clip), not scored", fg="yellow", err=True)
    for r in result.failed:
        click.secho(f"failed: {r.error}", fg="red", err=True)
    report_outside(
        [(shown(v.source), v.ood) for v in result.document.videos],
        can_judge=result.distance is not None,
        mode=ood,
        run_dir=run.path,
    )
    if result.failed and len(result.failed) == len(result.extract_report.results):
        sys.exit(1)
