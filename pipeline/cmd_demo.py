"""``vadpipe demo``: the embedded default, end to end on generated videos."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from vadpipe.cli_options import Command, option
from vadpipe.ood_cli import report_outside
from vadpipe.workspace import workspace_dir

__all__ = ["demo"]


@click.command(cls=Command)
@option(
    "--out",
    "out_dir",
    group="Output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Demo folder, replaced on each run [default: <workspace>/demo].",
)
@option(
    "--recipe",
    group="Recipe",
    type=click.Choice(["default", "paper"]),
    default="default",
    show_default=True,
    help="Training recipe (see vadpipe train --help): vadpipe's default, or the authors' 'paper' recipe "
    "(then every training video is trained on and the fixed threshold 0.35 is used).",
)
@option("--seed", group="Recipe", type=int, default=0, show_default=True, help="Seed of the generated videos.")
@option("--device", group="Where it runs", default="auto", help="auto, cpu, cuda or cuda:N.")
@option("-q", "--quiet", group="Output", is_flag=True, help="No progress bars.")
def demo(out_dir: Path | None, recipe: str, seed: int, device: str, quiet: bool) -> None:
    """Generate labelled synthetic videos, then extract, train, evaluate and detect on them."""
    from vadpipe.demo import DemoConfig, run_demo
    from vadpipe.recipes import recipe as named
    from vadpipe.tables import detection_table, metrics_table

    chosen = named(recipe)
    config = DemoConfig(seed=seed, training=chosen.training, calibration=chosen.calibration, ensemble=chosen.ensemble)
    console = Console(stderr=True)
    report = run_demo(
        out_dir or workspace_dir() / "demo",
        config=config,
        device=device,
        progress=not quiet,
        say=lambda text: console.print(f"[bold]{text}[/]"),
    )
    Console().print(metrics_table(report.metrics))
    Console().print(detection_table(report.metrics))
    op = report.metrics["operating_point"]
    click.echo(
        f"operating point ({op['method']}): curve threshold {op['threshold']:.3f}, "
        f"video threshold {op['video_threshold']:.3f}"
    )
    frame = report.metrics["frame"]
    click.echo(
        f"test frame-level AUC {frame['auc']:.3f}, AP {frame['ap']:.3f} "
        f"(chance: AUC 0.5, AP {frame['n_positive'] / max(frame['n'], 1):.3f})"
    )
    for video in report.detection.document.videos:
        spans = ", ".join(f"{i.start_s:.1f}-{i.end_s:.1f}s" for i in video.intervals) or "none"
        probability = "" if video.video_probability is None else f" (P(anomalous) {video.video_probability:.2f})"
        outside = "" if video.ood is None else f", {video.ood.share_outside:.0%} of clips outside the training footage"
        click.echo(
            f"  {Path(video.source).name}: score {video.video_score:.2f}{probability}, intervals {spans}{outside}"
        )
    report_outside(
        [(Path(v.source).name, v.ood) for v in report.detection.document.videos],
        can_judge=report.detection.distance is not None,
        mode="warn",
        run_dir=report.run_dir,
    )
    click.echo(f"intervals: {report.intervals_path}\nplots: {report.root / 'plots'}\nmodel: {report.run_dir}")
