"""One extraction process per device sharing one cache: ``vadpipe extract --devices 0,1``.

The video list is split into one shard per device; each shard runs in its own process
(the single-process engine, or the worker engine when ``workers`` > 0) writing into the same
cache folder. All videos with the same file stem go to the same shard, so the stems (and their
``-<sha8>`` suffixes on clashes) are assigned exactly as one process assigns them; shards are
balanced by file size. The per-stem file locks keep the no-duplicate guarantee even when another
command extracts into the same cache at the same time.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from vadpipe import errors
from vadpipe.errors import ConfigError, VadpipeError

from . import cache
from .runner import ExtractReport, VideoResult, _progress, discover_inputs, open_report
from .settings import ExtractionSettings
from .weights import resolve_weights

__all__ = ["parse_devices", "shard_videos", "extract_on_devices"]


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
        try:
            dev = torch.device(item)
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {item!r} in devices (use CUDA ids like 0,1, cuda:N or cpu)") from exc
        if dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"device {item!r}: only cpu and cuda devices are supported")
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (dev.index or 0) >= count:
                raise ConfigError(f"device {item} requested but this machine has {count} CUDA device(s)")
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


def _device_main(conn: Connection, sources: list[str], out_dir: str, settings_dict: dict, weights: str,
                 device: str, batch_size: int, workers: int) -> None:
    """Process per device: run one engine on the shard, streaming each result to the parent."""
    # the parent turns Ctrl-C into one SIGTERM per device process: stop cleanly, as on Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    from .runner import extract_paths
    from .workers import extract_with_workers

    def send(result: VideoResult) -> None:
        try:
            conn.send(("result", asdict(result)))
        except OSError:  # the parent is gone (killed): stop, releasing the locks on the way out
            raise SystemExit(1) from None

    settings = ExtractionSettings.from_dict(settings_dict)
    common = dict(out_dir=Path(out_dir), settings=settings, weights=Path(weights), device=device,
                  batch_size=batch_size, progress=False, on_result=send)
    try:
        if workers:
            report = extract_with_workers([Path(s) for s in sources], workers=workers, **common)
        else:
            report = extract_paths([Path(s) for s in sources], **common)
        conn.send(("done", {"interrupted": report.interrupted, "network_s": report.network_s,
                            "input_wait_s": report.input_wait_s, "loop_s": report.loop_s}))
    except VadpipeError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
    except KeyboardInterrupt:
        conn.send(("done", {"interrupted": True}))
    finally:
        conn.close()


def extract_on_devices(
    inputs: Iterable[Path],
    *,
    devices: str | Sequence[str],
    out_dir: Path,
    settings: ExtractionSettings = ExtractionSettings(),
    weights: Path | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    progress: bool = True,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """Extract with one process per device into one cache (see the module docstring).

    Args:
        devices: ``"0,1"``, ``["cuda:0", "cuda:1"]``, ``"cpu,cpu"``...
        workers: decode processes per device process; None: ``default_workers`` for the device
            with the machine's cores shared between devices (0 on CPU: a decode thread).
        inputs, out_dir, settings, weights, batch_size, progress, on_result: as ``extract_with_workers``.

    Returns:
        One ``ExtractReport`` for all devices, results in input order (missing paths first);
        ``network_s``, ``input_wait_s`` and ``loop_s`` are summed over the devices.
    """
    from .workers import default_workers

    devs = parse_devices(devices)
    if workers is not None and workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    sources, results = discover_inputs(inputs, out_dir)
    weights_path, weights_id = resolve_weights(weights, backbone=settings.backbone)  # once here, not per device
    settings = settings.with_weights(weights_id)
    report = open_report(out_dir, settings, results, on_result=on_result)
    by_source: dict[str, VideoResult] = {}
    from .workers import process_context

    ctx = process_context()
    children: list[tuple[mp.process.BaseProcess, Connection, str, list[Path]]] = []
    error: tuple[str, str] | None = None
    timing = {"network_s": 0.0, "input_wait_s": 0.0, "loop_s": 0.0}

    with _progress(progress) as bar:
        videos_task = bar.add_task("videos", total=len(sources), rate="")

        def take(msg, dev: str, state: dict) -> None:
            nonlocal error
            if msg[0] == "result":
                result = VideoResult(**msg[1])
                by_source[result.source] = result
                if on_result:
                    on_result(result)
                bar.advance(videos_task)
            elif msg[0] == "done":
                state["done"] = True
                report.interrupted |= bool(msg[1].get("interrupted"))
                for k in timing:
                    timing[k] += msg[1].get(k, 0.0)
            elif msg[0] == "error":
                state["done"] = True
                error = error or (msg[1], f"{msg[2]} (on {dev})")

        try:
            for dev, shard in zip(devs, shard_videos(sources, len(devs))):
                if not shard:
                    continue
                n_workers = workers if workers is not None else default_workers(torch.device(dev),
                                                                                n_devices=len(devs))
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_device_main, name=f"vadpipe-extract-{dev}",
                                   args=(child, [str(s) for s in shard], str(out_dir), settings.to_dict(),
                                         str(weights_path), dev, batch_size, n_workers))
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
                            _fail_unfinished(proc, dev, shard, by_source, out_dir, on_result, bar, videos_task)
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
    report.results.extend(by_source[str(s)] for s in sources if str(s) in by_source)
    report.network_s, report.input_wait_s, report.loop_s = (timing["network_s"], timing["input_wait_s"],
                                                            timing["loop_s"])
    report.seconds = time.perf_counter() - started
    return report


def _fail_unfinished(proc, dev: str, shard: list[Path], by_source: dict[str, VideoResult], out_dir: Path,
                     on_result, bar, task) -> None:
    """A device process that died (killed, out of memory): its videos without a result failed."""
    from .workers import _exit_reason

    reason = _exit_reason(proc.exitcode)
    for source in shard:
        if str(source) not in by_source:
            message = f"{source}: the extraction process for {dev} died ({reason})"
            result = VideoResult(str(source), "failed", error=message)
            by_source[str(source)] = result
            cache.append_failure(out_dir, source, message)
            if on_result:
                on_result(result)
            bar.advance(task)
