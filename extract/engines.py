"""Choose the extraction engine from the options: one process, worker processes, devices, or Ray.

Every engine writes the same cache (same files, records, names, skip and failure logic); they
differ only in where the decoding and the network run:

- local, ``workers=0``: a decode thread beside the network (``runner.extract_paths``);
- local, ``workers>0``: decode processes feeding the network (``workers.extract_with_workers``);
- local, several ``devices``: one process per device on a shard of the videos
  (``devices.extract_on_devices``);
- ``ray``: decode tasks and I3D actors on a Ray cluster (``ray_engine.extract_with_ray``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vadpipe.errors import ConfigError

from .settings import ExtractionSettings

if TYPE_CHECKING:  # the engines import torch: only when one runs (the CLI's --help stays fast)
    from .runner import ExtractReport, VideoResult

__all__ = ["ENGINES", "extract_videos"]

ENGINES = ("local", "ray")

# "s3://b/k" arrives as Path("s3:/b/k"): a scheme followed by a slash
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def extract_videos(
    inputs: Iterable[Path],
    *,
    out_dir: Path,
    settings: ExtractionSettings = ExtractionSettings(),
    weights: Path | None = None,
    device: str | None = None,
    batch_size: int = 8,
    engine: str = "local",
    workers: int | None = None,
    devices: str | None = None,
    address: str | None = None,
    progress: bool = True,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """Extract I3D features of ``inputs`` into the cache ``out_dir`` with the engine the options ask for.

    Args:
        engine: ``local`` (this machine) or ``ray`` (a Ray cluster; needs ``vadpipe[ray]``).
        workers: local: decode processes per device (0: a decode thread; None: from the CPU
            count on CUDA, 0 on CPU). Ray: video tasks in flight (None: the cluster's CPUs).
        devices: local only: comma-separated devices (``0,1``, ``cpu,cpu``), one process each.
        address: Ray only: the cluster to join (``auto``, ``host:port``, ``ray://host:port``).
        device: local only: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (exclusive with ``devices``).
        inputs, out_dir, settings, weights, batch_size, progress, on_result: as ``extract_paths``.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    inputs = list(inputs)
    for path in [out_dir, *inputs]:
        if _URL.match(str(path)):
            raise ConfigError(f"{path}: URLs (s3://, gs://, ...) are not supported; the cache needs atomic renames "
                              "and file locks: mount the bucket or use a shared file system path")
    if workers is not None and workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    explicit_device = device not in (None, "", "auto")
    if engine == "ray":
        if devices:
            raise ConfigError("--devices is for the local engine: on Ray every GPU of the cluster gets an I3D actor")
        if explicit_device:
            raise ConfigError("--device is for the local engine: on Ray the I3D actors use the cluster's GPUs, "
                              "or its CPUs when it has none")
        if workers == 0:
            raise ConfigError("workers must be >= 1 with the Ray engine (video tasks in flight)")
        from .ray_engine import extract_with_ray

        return extract_with_ray(inputs, out_dir=out_dir, settings=settings, weights=weights, batch_size=batch_size,
                                address=address, max_tasks=workers, progress=progress, on_result=on_result)
    if address is not None:
        raise ConfigError("--address is for the Ray engine: add --engine ray")
    if devices:
        if explicit_device:
            raise ConfigError("give --device or --devices, not both")
        from .devices import extract_on_devices, parse_devices

        devs = parse_devices(devices)
        if len(devs) > 1:
            return extract_on_devices(inputs, devices=devs, out_dir=out_dir, settings=settings, weights=weights,
                                      batch_size=batch_size, workers=workers, progress=progress, on_result=on_result)
        device = devs[0]
    from .runner import extract_paths, select_device
    from .workers import default_workers, extract_with_workers

    n_workers = workers if workers is not None else default_workers(select_device(device))
    if n_workers == 0:
        return extract_paths(inputs, out_dir=out_dir, settings=settings, weights=weights, device=device,
                             batch_size=batch_size, progress=progress, on_result=on_result)
    return extract_with_workers(inputs, out_dir=out_dir, settings=settings, weights=weights, device=device,
                                batch_size=batch_size, workers=n_workers, progress=progress, on_result=on_result)
