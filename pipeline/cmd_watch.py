"""``vadpipe watch``: score live cameras (or paced files) as they play, and emit events."""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path

import click
import tomllib

from vadpipe.cli_options import Alias, Command, option, trained_run_option
from vadpipe.errors import ConfigError
from vadpipe.extract.backbones import BACKBONES
from vadpipe.ood_cli import ood_option
from vadpipe.workspace import runs_dir

__all__ = ["watch", "read_camera_config"]


def read_camera_config(path: Path, *, realtime: bool):
    """Cameras from a TOML file: ``[[camera]]`` tables with ``name``, ``url`` and optional ``realtime``."""
    from vadpipe.extract.sources import parse_source

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML camera list ({exc})") from None
    cameras = data.get("camera")
    if not isinstance(cameras, list) or not cameras:
        raise ConfigError(f"{path}: expected [[camera]] tables with name and url")
    specs = []
    for i, cam in enumerate(cameras):
        unknown = set(cam) - {"name", "url", "realtime"}
        if unknown or "url" not in cam or not isinstance(cam["url"], str):
            raise ConfigError(
                f"{path}: camera {i + 1} needs a url (string) and may have name, realtime; got keys {sorted(cam)}"
            )
        specs.append(parse_source(cam["url"], name=cam.get("name"), realtime=bool(cam.get("realtime", realtime))))
    return specs


def _unit_interval(ctx, param, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must lie in [0, 1], got {value}")
    return value


@click.command(cls=Command)
@click.argument("sources", nargs=-1)
@trained_run_option
@option(
    "--config",
    "config_file",
    group="Input",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='TOML file naming the cameras: [[camera]] name = "gate", url = "rtsp://...".',
)
@option("--realtime", group="Input", is_flag=True, help="Play file sources at their frame rate, like a camera.")
@option(
    "--events",
    "events_file",
    group="Output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append events as JSON lines to this file [default: stdout].",
)
@option(
    "--scores",
    "scores_file",
    group="Output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every clip's scores as JSON lines to this file.",
)
@option(
    "--on-event",
    "on_event",
    group="Output",
    default=None,
    help="Shell command run per event, the event's JSON on stdin.",
)
@option(
    "--webhook",
    group="Output",
    default=None,
    help="POST each event's JSON to this URL (3 retries; failures are logged).",
)
@option(
    "--save-clips",
    group="Output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each event's footage (with pre- and post-roll) as an MP4 into this folder.",
)
@option(
    "--pre-roll",
    group="Output",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds before an event.",
)
@option(
    "--post-roll",
    group="Output",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="Seconds after an event.",
)
@option(
    "--threshold",
    group="Operating point",
    type=float,
    default=None,
    callback=_unit_interval,
    help="Curve threshold instead of the run's operating point (alone: no video gate).",
)
@option(
    "--video-threshold",
    group="Operating point",
    type=float,
    default=None,
    callback=_unit_interval,
    help="Video gate instead of the run's, applied to the trailing --gate-window (0: no gate).",
)
@option(
    "--min-duration",
    group="Operating point",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Announce only intervals at least this many seconds long.",
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
    "--gate-window",
    group="Operating point",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Clips in the trailing window the live video gate scores.",
)
@option(
    "--lag",
    group="Where it runs",
    type=click.Choice(["auto", "drop", "wait"]),
    default="auto",
    show_default=True,
    help="When I3D falls behind: drop whole clips (auto: for live sources) or wait (auto: for files).",
)
@option(
    "--queue",
    "queue_clips",
    group="Where it runs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Clips queued per camera before the lag policy applies.",
)
@option(
    "--update-every",
    group="Output",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Emit an update event this often (seconds) while an interval is open (0: never).",
)
@option(
    "--reconnect-for",
    group="Input",
    type=click.FloatRange(min=0),
    default=math.inf,
    metavar="SECONDS",
    help="Reconnect a dropped URL or device source (with backoff) for up to this many seconds of outage, "
    "then give it up (0: never reconnect; inf: forever).",
)
@click.option("--reconnect/--no-reconnect", cls=Alias, use="--reconnect-for SECONDS (0: never)", default=None)
@option(
    "--timeout",
    "open_timeout",
    group="Input",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait when opening or reading a source.",
)
@option(
    "--weights", group="Model", type=click.Path(path_type=Path), default=None, help="I3D weights (see vadpipe extract)."
)
@option(
    "--backbone",
    group="Model",
    type=click.Choice(list(BACKBONES)),
    default=None,
    help="The I3D network, for a run that does not record its features' network (see vadpipe detect).",
)
@option("--device", group="Where it runs", default="auto", help="auto, cpu, cuda or cuda:N.")
@option(
    "--i3d-batch",
    group="Where it runs",
    type=click.IntRange(min=1),
    default=8,
    help="Crops per I3D forward pass, gathered across cameras.",
)
@click.option("--batch-size", cls=Alias, target="i3d_batch", use="--i3d-batch", type=click.IntRange(min=1))
@option(
    "--panel/--no-panel",
    group="Output",
    default=None,
    help="Live panel on stderr (never with --quiet)  [default: when stderr is a terminal].",
)
@ood_option
@option("-q", "--quiet", group="Output", is_flag=True, help="No status lines, and so no panel (whatever --panel says).")
def watch(
    sources: tuple[str, ...],
    model_dir: Path | None,
    config_file: Path | None,
    realtime: bool,
    events_file: Path | None,
    scores_file: Path | None,
    on_event: str | None,
    webhook: str | None,
    save_clips: Path | None,
    pre_roll: float,
    post_roll: float,
    threshold: float | None,
    video_threshold: float | None,
    min_duration: float,
    merge_gap: float,
    gate_window: int,
    lag: str,
    queue_clips: int,
    update_every: float,
    reconnect_for: float,
    reconnect: bool | None,
    open_timeout: float,
    weights: Path | None,
    backbone: str | None,
    device: str,
    i3d_batch: int,
    panel: bool | None,
    ood: str,
    quiet: bool,
) -> None:
    """Score camera streams (rtsp/rtmp/http(s)/udp/srt URLs, /dev/videoN, files) as they arrive.

    Events go out as JSON lines (start, update, end, gap, summary, error). Ctrl-C or SIGTERM
    closes the open events and clip files and exits. Exit status: 0 done, 1 every camera
    failed, 2 bad options or an unusable model (or, with --ood error, a camera whose recent clips
    are unlike the training footage), 130 interrupted.
    """
    from vadpipe.detect import encoder_for, run_extraction_settings
    from vadpipe.extract.sources import parse_source
    from vadpipe.hooks import CommandHook, JsonLinesSink, WebhookHook
    from vadpipe.model.run import latest_run, load_run
    from vadpipe.postprocess.intervals import OperatingPoint
    from vadpipe.watch import Watch, WatchConfig

    if reconnect is False:  # the old --no-reconnect
        reconnect_for = 0.0
    specs = [parse_source(s, realtime=realtime) for s in sources]
    if config_file is not None:
        specs += read_camera_config(config_file, realtime=realtime)
    if not specs:
        raise ConfigError("name at least one source (a URL, /dev/videoN or a file) or a --config file")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"--webhook must be an http:// or https:// URL, got {webhook!r}")
    run = load_run(model_dir or latest_run(runs_dir()))
    settings = run_extraction_settings(run, backbone=backbone)
    op = OperatingPoint.for_run(
        run.config.operating_point,
        where=f"{run.path}/config.json",
        threshold=threshold,
        video_threshold=video_threshold,
        min_duration_s=min_duration,
        merge_gap_s=merge_gap,
    )
    config = WatchConfig(
        batch_size=i3d_batch,
        queue_clips=queue_clips,
        lag=lag,
        gate_window=gate_window,
        save_clips=save_clips,
        pre_roll_s=pre_roll,
        post_roll_s=post_roll,
        reconnect=reconnect_for > 0,
        reconnect_for_s=0.0 if math.isinf(reconnect_for) else reconnect_for,  # WatchConfig: 0 = forever
        open_timeout_s=open_timeout,
        update_every_s=update_every,
        ood=ood,
    )
    encoder, settings = encoder_for(settings, weights=weights, device=device)

    def say(message: str) -> None:
        if not quiet or message.startswith("error"):
            click.secho(
                message,
                err=True,
                fg="red" if message.startswith("error") else "yellow" if message.startswith("warning") else None,
            )

    sinks = [JsonLinesSink(events_file)]
    if on_event:
        sinks.append(CommandHook(on_event, log=say))
    if webhook:
        sinks.append(WebhookHook(webhook, log=say))
    scores_sink = JsonLinesSink(scores_file) if scores_file is not None else None
    w = Watch(
        specs,
        run,
        encoder,
        settings,
        op,
        config,
        block_len=run.config.block_len,
        sinks=sinks,
        on_clip=scores_sink.send if scores_sink else None,
        log=say,
    )
    say(
        f"watching {len(specs)} camera(s) with {run.path} (threshold {op.threshold:.3f}"
        + (f", video gate {op.video_threshold:.3f} over {gate_window} clips" if op.video_threshold > 0 else "")
        + "); Ctrl-C to stop"
    )

    signalled: list[int] = []

    def on_term(signum, frame) -> None:
        signalled.append(signum)
        w.stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    show_panel = (panel if panel is not None else sys.stderr.isatty()) and not quiet
    interrupted = False
    try:
        if show_panel:
            from vadpipe.panel import live_panel

            with live_panel(w) as tick:
                w.run_until_done(on_tick=tick)
        else:
            w.run_until_done()
    except KeyboardInterrupt:
        interrupted = True
        w.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for sink in sinks:
            sink.close()
        if scores_sink is not None:
            scores_sink.close()
    statuses = w.statuses()
    for st in statuses:
        if not quiet:
            say(
                f"{st.name}: {st.clips} clips scored, {st.dropped} dropped"
                + (f"; failed: {st.error}" if st.error else "")
            )
    if w.outside_error:
        sys.exit(2)
    if interrupted or signalled:
        sys.exit(130)
    if all(st.state == "failed" for st in statuses):
        sys.exit(1)
