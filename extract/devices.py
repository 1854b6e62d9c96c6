"""One extraction process per device sharing one cache: ``vadpipe extract --devices 0,1``.

The video list is split into one shard per device; each shard runs in its own process (the
thread executor, or decode processes when ``decode_processes`` > 0, through ``local``: the parent
has already found the inputs, checked the cache folder and opened the report) writing into the
same cache folder. All videos with the same file stem go to the same shard, so the stems (and their
``-<sha8>`` suffixes on clashes) are assigned exactly as one process assigns them; shards are
balanced by file size. The per-stem file locks keep the no-duplicate guarantee even when another
command extracts into the same cache at the same time.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from vadpipe import errors
from vadpipe.errors import ConfigError, VadpipeError

from .encoder import known_device, load_encoder
from .local import run_collected, run_in_process
from .options import DecodeProcessOptions, DeviceOptions, ExtractRun, ThreadOptions
from .procs import default_workers, exit_reason, process_context
from .results import ExtractReport, VideoResult
from .settings import ExtractionSettings

__all__ = ["parse_devices", "shard_videos", "run_on_devices"]


def parse_devices(spec: str | Sequence[str]) -> list[str]:
    """``"0,1"`` -> ``["cuda:0", "cuda:1"]``; ``cpu``, ``cuda`` and ``cuda:N`` are kept as given.

    CUDA devices are checked against the ones this machine has. A device may be listed twice
    (two processes on one device).
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    if not items or any(not s for s in items):
        raise ConfigError(f"devices must be a comma-separated list such as 0,1 or cpu,cpu, got {spec!r}")
    out = []
    for item in items:
        if item.isdigit():
            item = f"cuda:{item}"
        dev = known_device(item, hint="CUDA ids like 0,1, cuda:N or cpu")
        out.append(str(dev))
    return out


def shard_videos(sources: Sequence[Path], n: int) -> list[list[Path]]:
    """Split ``sources`` into ``n`` shards: same-stem files together, about equal bytes each.

    Stem groups are placed largest first on the least loaded shard (ties: the lower shard);
    each shard keeps the input order. Deterministic for a given list.
    """
    if n < 1:
        raise ConfigError(f"need at least one shard, got {n}")
    order = {s: i for i, s in enumerate(sources)}
    groups: dict[str, list[Path]] = {}
    for s in sources:
        groups.setdefault(Path(s).stem, []).append(s)

    def size(p: Path) -> int:
        try:
            return Path(p).stat().st_size
        except OSError:  # reported by the shard that gets it
            return 0

    weighted = sorted(groups.values(), key=lambda g: (-sum(size(p) for p in g), order[g[0]]))
    loads = [0] * n
    shards: list[list[Path]] = [[] for _ in range(n)]
    for group in weighted:
        k = min(range(n), key=lambda j: (loads[j], j))
        shards[k].extend(group)
        loads[k] += sum(size(p) for p in group) or 1  # empty files still count, to spread them
    return [sorted(shard, key=order.__getitem__) for shard in shards]


@dataclass(frozen=True)
class _Result:  # device process -> parent: one video's result (failures already in failures.jsonl)
    result: VideoResult


@dataclass(frozen=True)
class _Done:  # device process -> parent: its shard is done
    interrupted: bool
    network_s: float = 0.0
    input_wait_s: float = 0.0
    loop_s: float = 0.0


@dataclass(frozen=True)
class _Error:  # device process -> parent: a run-stopping error (VadpipeError subclass name, message)
    kind: str
    message: str


def _device_main(
    conn: Connection,
    sources: list[str],
    out_dir: str,
    settings_dict: dict,
    weights: str,
    device: str,
    batch_size: int,
    decode_processes: int,
) -> None:
    """Process per device: run one in-process executor on the shard, streaming each result to the parent."""
    # the parent turns Ctrl-C into one SIGTERM per device process: stop cleanly, as on Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def send(result: VideoResult) -> None:
        try:
            conn.send(_Result(result))
        except OSError:  # the parent is gone (killed): stop, releasing the locks on the way out
            raise SystemExit(1) from None

    executor = (
        DecodeProcessOptions(device=device, processes=decode_processes)
        if decode_processes
        else ThreadOptions(device=device)
    )
    try:
        encoder, settings = load_encoder(
            ExtractionSettings.from_dict(settings_dict), weights=Path(weights), device=executor.device
        )
        report = ExtractReport(out_dir=out_dir, settings_key=settings.key())
        run_collected(
            lambda run: run_in_process(run, executor, encoder),
            report,
            sources=[Path(s) for s in sources],
            out_dir=Path(out_dir),
            settings=settings,
            batch_size=batch_size,
            weights=Path(weights),
            weights_file=None,
            progress=False,
            on_result=send,
        )
        conn.send(_Done(report.interrupted, report.network_s, report.input_wait_s, report.loop_s))
    except VadpipeError as exc:
        conn.send(_Error(type(exc).__name__, str(exc)))
    except KeyboardInterrupt:
        conn.send(_Done(interrupted=True))
    finally:
        conn.close()


def run_on_devices(run: ExtractRun, options: DeviceOptions) -> None:
    """Extract ``run.sources`` with one process per device into one cache (see the module docstring).

    Each device process gets ``options.decode_processes`` decode processes (None: the machine's
    cores shared between the devices on CUDA, 0 on CPU: a decode thread). The report's
    ``network_s``, ``input_wait_s`` and ``loop_s`` are summed over the devices.
    """
    devs = parse_devices(options.devices)
    report, collect = run.collect.report, run.collect
    types = sorted({torch.device(d).type for d in devs})
    if run.settings.precision == "bf16":
        if len(types) > 1:
            raise ConfigError("bf16 computes other numbers on a CPU than on CUDA: give --devices of one kind")
        run = replace(run, settings=run.settings.on_device(types[0]))
        report.settings_key = run.settings.key()  # each device process stamps its settings alike
    seq_of = {str(s): i for i, s in enumerate(run.sources)}
    ctx = process_context()
    children: list[tuple[mp.process.BaseProcess, Connection, str, list[Path]]] = []
    error: tuple[str, str] | None = None

    def take(msg, dev: str, state: dict) -> None:
        nonlocal error
        if isinstance(msg, _Result):
            collect.add(seq_of[msg.result.source], msg.result, logged=True)
        elif isinstance(msg, _Done):
            state["done"] = True
            report.interrupted |= msg.interrupted
            report.network_s += msg.network_s
            report.input_wait_s += msg.input_wait_s
            report.loop_s += msg.loop_s
        elif isinstance(msg, _Error):
            state["done"] = True
            error = error or (msg.kind, f"{msg.message} (on {dev})")

    def fail_unfinished(proc, dev: str, shard: list[Path]) -> None:
        """A device process that died (killed, out of memory): its videos without a result failed."""
        reason = exit_reason(proc.exitcode)
        for source in shard:
            if not collect.has(seq_of[str(source)]):
                message = f"{source}: the extraction process for {dev} died ({reason})"
                collect.add(seq_of[str(source)], VideoResult(str(source), "failed", error=message))

    try:
        for dev, shard in zip(devs, shard_videos(run.sources, len(devs))):
            if not shard:
                continue
            n_decode = (
                options.decode_processes
                if options.decode_processes is not None
                else default_workers(torch.device(dev), n_devices=len(devs))
            )
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_device_main,
                name=f"vadpipe-extract-{dev}",
                args=(
                    child,
                    [str(s) for s in shard],
                    str(run.out_dir),
                    run.settings.to_dict(),
                    str(run.weights_file),
                    dev,
                    run.batch_size,
                    n_decode,
                ),
            )
            proc.start()
            child.close()
            children.append((proc, parent, dev, shard))
        states = {id(c[1]): {"done": False, "open": True} for c in children}
        interrupted_once = False
        while any(states[id(conn)]["open"] for _, conn, _, _ in children):
            try:
                ready = wait([conn for _, conn, _, _ in children if states[id(conn)]["open"]])
            except KeyboardInterrupt:
                if interrupted_once:
                    raise
                interrupted_once = True
                report.interrupted = True
                for proc, _, _, _ in children:
                    if proc.is_alive():
                        proc.terminate()  # SIGTERM: the device process stops cleanly
                continue
            for proc, conn, dev, shard in children:
                if conn not in ready:
                    continue
                state = states[id(conn)]
                try:
                    take(conn.recv(), dev, state)
                except (EOFError, OSError):
                    state["open"] = False
                    conn.close()
                    proc.join()
                    if not state["done"]:
                        fail_unfinished(proc, dev, shard)
    finally:
        for proc, conn, _, _ in children:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
    if error is not None:
        cls = getattr(errors, error[0], VadpipeError)
        raise (cls if isinstance(cls, type) and issubclass(cls, VadpipeError) else VadpipeError)(error[1])
