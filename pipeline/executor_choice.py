"""Which executor the command line asks for: ``--engine``, ``--device``, ``--devices``,
``--decode-procs``, ``--address``, ``--ray-tasks``, ``--ray-task-timeout`` -> one options object.

The policy lives with the CLI because its refusals name the CLI's flags; the options it returns
are ``vadpipe.extract.options``'. This module imports no torch (the CLI's --help stays fast):
the device checks load it only when an executor is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

from vadpipe.errors import ConfigError
from vadpipe.extract.options import DecodeProcessOptions, DeviceOptions, ExecutorOptions, RayOptions, ThreadOptions

__all__ = ["ENGINES", "choose_executor"]

ENGINES = ("local", "ray")


def choose_executor(
    *,
    engine: str = "local",
    device: str | None = None,
    devices: str | Sequence[str] | None = None,
    decode_processes: int | None = None,
    address: str | None = None,
    ray_tasks: int | None = None,
    ray_task_timeout_s: float | None = None,
    runtime: str = "torch",
) -> ExecutorOptions:
    """The executor the CLI's options ask for, refusing options of another executor.

    Local: several ``devices`` -> ``DeviceOptions``; else ``decode_processes`` 0 -> a thread,
    N -> processes, None -> processes on CUDA, a thread on CPU (``auto`` is the device ``runtime`` runs on).
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
        from vadpipe.extract.devices import parse_devices

        devs = parse_devices(devices)
        if len(devs) > 1:
            return DeviceOptions(devices=tuple(devs), decode_processes=decode_processes)
        device = devs[0]
    device = device or "auto"
    if decode_processes is None:
        from vadpipe.extract.encoder import select_device
        from vadpipe.extract.procs import default_workers

        decode_processes = default_workers(select_device(device, runtime=runtime))
    if decode_processes == 0:
        return ThreadOptions(device=device)
    return DecodeProcessOptions(device=device, processes=decode_processes)
