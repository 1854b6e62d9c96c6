"""``vadpipe evaluate``: a trained run on test features -> the four Table-1 levels x (AUC, AP)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vadpipe.cli_options import Command, option, trained_run_option
from vadpipe.extract.fileio import atomic_write_text
from vadpipe.ood_cli import ood_option, report_outside
from vadpipe.tables import detection_table, metrics_table
from vadpipe.workspace import runs_dir

__all__ = ["evaluate", "print_report"]

# vadpipe.postprocess.metrics.PROTOCOLS (and LEVELS, in vadpipe.tables), spelled out so that `vadpipe --help` does not
# import scikit-learn and torch (a test checks they agree).
PROTOCOLS = ("standard", "csl")


def _operating_point_line(report: dict) -> str:
    op = report.get("operating_point") or {}
    method = op.get("method", "manual")
    where = {
        "fixed": "the paper's fixed threshold, no video gate",
        "manual": "given on the command line",
        "false_alarms": f"calibrated on held-out training videos for a false-alarm rate <= "
        f"{op.get('target_false_alarm_rate') or 0:g}",
        "f1": "calibrated on held-out training videos for the best interval F1",
    }.get(method, method)
    return (
        f"operating point: curve threshold {report['threshold']:.4g}, video threshold "
        f"{report.get('video_threshold', 0.0):.4g} ({where})"
    )


def print_report(console: Console, report: dict) -> None:
    """What was evaluated, the metrics tables, and what their columns mean."""
    counts = report["counts"]
    console.print(
        f"{counts['videos']} videos ({counts['anomalous_videos']} anomalous), {counts['entries']} evaluated entries",
        highlight=False,
    )
    console.print(_operating_point_line(report), highlight=False)
    console.print(metrics_table(report))
    if "detection" in report:
        console.print(detection_table(report))
    console.print(
        "AP: sklearn average_precision_score; AP trapz: auc(recall, precision), the "
        "trapezoidal PR-AUC most papers report",
        style="dim",
    )
    if report["protocol"] == "csl":
        console.print(
            "paper: Table 1 AUC/AP with alignment; swapped: its other column, in case "
            "the paper's frame and proposal columns are swapped (postprocess/README.md §6)",
            style="dim",
        )


@click.command(cls=Command)
@trained_run_option
@option(
    "--features",
    "features_dir",
    group="Input",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Test features: a vadpipe cache folder, or XD-Violence <video>__<crop>.npy files (flat or in RGBTest/).",
)
@option(
    "--annotations",
    "annotations_file",
    group="Input",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="XD-Violence annotations.txt format: '<video> s1 e1 [s2 e2 ...]' half-open frame "
    "intervals; videos absent from it are normal.",
)
@option(
    "--protocol",
    group="Evaluation",
    type=click.Choice(PROTOCOLS),
    default="standard",
    show_default=True,
    help="standard: every clip, crops averaged, clip scores x16 against frame labels; "
    "csl: the authors' per-crop, 1-in-3 subsampled protocol (Table 1).",
)
@option(
    "--threshold",
    group="Operating point",
    type=click.FloatRange(min=0, max=1),
    default=None,
    help="Curve threshold on the interpolated weighted T-CAM (proposal level and decisions) "
    "instead of the run's calibrated operating point; alone it means no video gate "
    "(0.35: the paper's rule and Table 1's proposal level).  [default: the run's]",
)
@option(
    "--video-threshold",
    group="Operating point",
    type=click.FloatRange(min=0, max=1),
    default=None,
    help="Video gate instead of the run's: videos whose video score is below it get no "
    "interval (0: no gate).  [default: the run's]",
)
@option(
    "--parity-q11",
    group="Evaluation",
    is_flag=True,
    help="csl only: drop the last clip of sequences with T <= 2L = 6 clips, as the authors' code does (postprocess/README.md §1).",
)
@option(
    "--json",
    "json_out",
    group="Output",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    default=None,
    help="Write every level x metric as JSON to this file ('-' for stdout).",
)
@ood_option
@option("-q", "--quiet", group="Output", is_flag=True, help="No progress bar.")
def evaluate(
    model_dir: Path | None,
    features_dir: Path,
    annotations_file: Path,
    protocol: str,
    threshold: float | None,
    video_threshold: float | None,
    parity_q11: bool,
    json_out: Path | None,
    ood: str,
    quiet: bool,
) -> None:
    """Evaluate a trained model: video, segment, frame and proposal-frame AUC and AP, and the
    decisions at its operating point (false alarms on normal videos, interval precision /
    recall / F1 at IoU 0.3 and 0.5, frame false-positive rate).

    AP is printed both as scikit-learn's average precision and as the trapezoidal PR-AUC.
    Test videos outside the training footage are reported (JSON "ood"; see --ood): the metrics
    still include them.
    """
    from vadpipe.model.run import latest_run
    from vadpipe.postprocess.evaluate import evaluate_run, json_ready
    from vadpipe.postprocess.ood import judge_run_features

    if model_dir is None:
        model_dir = latest_run(runs_dir())
    stderr = Console(stderr=True)
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, stem: str) -> None:
            bar.update(task, completed=done, total=total, description=escape(stem[:40]))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = evaluate_run(
                model_dir,
                features_dir,
                annotations_file,
                protocol=protocol,
                threshold=threshold,
                video_threshold=video_threshold,
                parity_q11=parity_q11,
                progress=progress,
            )
    judged = judge_run_features(model_dir, features_dir)
    report["ood"] = (
        None
        if judged is None
        else {
            "outside": [name for name, j in judged.items() if j.outside],
            "videos": {
                name: {"outside_training": j.outside, "share_outside": j.share_outside} for name, j in judged.items()
            },
        }
    )
    report["warnings"] = [str(w.message) for w in caught]
    for message in report["warnings"]:
        click.secho(f"warning: {message}", fg="yellow", err=True)
    # The table is the result for a person: stdout, unless stdout carries the JSON.
    print_report(Console(stderr=str(json_out) == "-"), report)
    if json_out is not None:
        text = json.dumps(json_ready(report), indent=2, allow_nan=False)
        if str(json_out) == "-":
            click.echo(text)
        else:
            atomic_write_text(json_out, text + "\n")
    report_outside((judged or {}).items(), can_judge=judged is not None, mode=ood, run_dir=model_dir)
