"""How vadpipe starts and sizes child processes: shared by every executor that starts any.

The decode-process executor, the one-process-per-device executor and the Ray actors size their
work by the cores this process may use (decoder threads included), check the shared memory their
children need, start children the same way and name a dead child's cause the same way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from vadpipe.errors import ConfigError

if TYPE_CHECKING:  # only the device's type is read: the CLI sizes executors before torch loads
    import torch

__all__ = [
    "usable_cpus",
    "process_context",
    "default_workers",
    "decode_threads",
    "shared_memory_free",
    "check_shared_memory",
    "exit_reason",
]

SHM = Path("/dev/shm")  # where torch's shared tensors live on Linux


def usable_cpus() -> int:
    """CPU cores this process may run on (affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def process_context() -> mp.context.BaseContext:
    """How vadpipe starts processes: ``forkserver`` where the platform has it, else ``spawn``.

    Both start from a clean interpreter (no copy of this process's threads, network or CUDA
    state), so everything handed over is pickled. The fork server imports torch, torchvision and
    PyAV once (through the decode-process executor's module); each worker is then a fork of it,
    ready in milliseconds instead of seconds (replacing a dead worker included).
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["vadpipe.extract.workers"])  # no effect once the server runs
        return ctx
    return mp.get_context("spawn")


def default_workers(device: torch.device, *, n_devices: int = 1) -> int:
    """Decode processes per device: on CUDA every core but one (the network's feeder), shared
    between devices; on CPU none (0 = one decode thread in the main process), because there the
    network needs the cores and is far slower than decoding."""
    if device.type != "cuda":
        return 0
    return max(1, usable_cpus() // max(1, n_devices) - 1)


def decode_threads(processes: int, cpus: int | None = None) -> int:
    """Decoder threads for each of ``processes`` decode processes: their share of the ``cpus``
    (None: the usable cores), at least one, rather than every core in each."""
    return max(1, (cpus if cpus is not None else usable_cpus()) // max(1, processes))


def shared_memory_free(path: Path = SHM) -> int | None:
    """Free bytes of the shared-memory file system (None where there is none to ask)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def check_shared_memory(needed: int, free: int | None) -> None:
    """Refuse to start decode processes whose shared clip slots (``needed`` bytes) exceed the
    ``free`` shared memory: past it, the first write into a slot kills the process with a bus error.
    Docker gives containers 64 MB of ``/dev/shm`` unless told otherwise."""
    if free is not None and needed > free:
        raise ConfigError(
            f"the decode processes need {needed / 2**20:.0f} MiB of shared memory but {SHM} has "
            f"{free / 2**20:.0f} MiB free: give the container more (docker run --shm-size=1g, or "
            "--ipc=host), or lower --decode-procs or --i3d-batch"
        )


def exit_reason(code: int | None) -> str:
    """How a child process ended, in words (for the failed video's message)."""
    if code is None:
        return "unknown cause"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
