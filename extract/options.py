"""What an extraction run is given: one frozen options object per executor, and ``ExtractRun``.

Every executor runs the same video job (``vadpipe.extract.job``) and writes the same cache (same
files, records, names, skip and failure logic); they differ only in where decoding and the
network run:

- ``ThreadOptions``: a decode thread beside the network in this process (``runner``);
- ``DecodeProcessOptions``: decode processes feeding the network in this process (``workers``);
- ``DeviceOptions``: one process per device, each on a share of the videos (``devices``);
- ``RayOptions``: decode tasks and I3D actors on a Ray cluster (``ray_engine``).

This module imports no torch: the CLI builds the options before anything heavy loads, and every
executor imports them from here (none imports the entry point, ``engines.extract_videos``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vadpipe.errors import ConfigError

from .settings import ExtractionSettings

if TYPE_CHECKING:  # job imports torch
    from .collector import Collector

__all__ = [
    "ThreadOptions",
    "DecodeProcessOptions",
    "DeviceOptions",
    "RayOptions",
    "ExecutorOptions",
    "InProcessOptions",
    "IN_PROCESS",
    "ExtractRun",
]


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
InProcessOptions = ThreadOptions | DecodeProcessOptions
IN_PROCESS = (ThreadOptions, DecodeProcessOptions)  # the network runs in this process


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
