"""The Ray engine: ``vadpipe extract PATH... --engine ray [--address auto]`` across a cluster.

The video job is ``vadpipe.extract.job``'s, cut into Ray pieces:

1. hash tasks (one CPU each) read every video for its sha256, in parallel on the cluster;
2. the driver names the cache entries in input order (``EntryNamer``, so the names are the
   local executors'), drops in-run duplicates and skips entries that are complete and current;
3. once the actors are up, one video task per remaining video (one CPU) claims the entry
   (``claim_entry``: lock, skip when complete and current; held by another run: the driver
   waits and looks again, without a task), decodes and crops the clips, sends each batch
   (``clips_per_batch``) to an ``I3DBatchEncoder`` actor, and writes the entry;
4. the driver's ``Collector`` takes the results, writes ``failures.jsonl`` and the report.

There is one encoder actor per GPU of the cluster (``num_gpus=1`` each), or a single CPU actor
when the cluster has none (or the runtime is ``openvino``, which runs on CPUs). The cache folder must be a path every node sees (NFS, Lustre, a
mounted bucket that supports renames and POSIX locks): records, locks and atomic renames are
plain files. ``s3://`` and other fsspec URLs are not supported (see the README).

What runs on the workers (the actor, the video task, the stop marker) is ``ray_tasks``. Ray is an
optional dependency (``pip install 'vadpipe[ray]'``), imported on first use.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from vadpipe.errors import CacheError, ConfigError

from . import cache, job
from .claims import EntryNamer, claim_entry
from .events import Duplicate, Failed, Skipped
from .fileio import sha256_file
from .options import ExtractRun, RayOptions
from .ray_tasks import I3DBatchEncoder, StopMarker, cause_line, first_line, import_ray, run_video
from .settings import ExtractionSettings

__all__ = ["run_on_ray"]

_STOP_WAIT_S = 30.0  # how long an interrupted driver waits for its video tasks to end
_RECLAIM_S = 1.0  # how often the driver looks at a video another run holds
_CONNECT_S = 10.0  # for the cluster's address to accept a connection


def _check_reachable(address: str | None) -> None:
    """Fail at once, naming the address, when nothing answers at a ``host:port`` cluster address:
    ``ray.init`` would retry an unreachable GCS for minutes (seen: more than 5). Ray dials the
    machine's own address for a loopback one, so a cluster bound to 127.0.0.1 is unreachable too."""
    if not address or address == "auto" or "://" in address:
        return
    try:  # the address Ray will dial (private, hence guarded: without it the check is skipped)
        from ray._private.services import canonicalize_bootstrap_address

        dialled = canonicalize_bootstrap_address(address)
        host, _, port = dialled.rpartition(":")
        target = (host.strip("[]"), int(port))
    except Exception:
        return
    try:
        socket.create_connection(target, timeout=_CONNECT_S).close()
    except OSError as exc:
        via = (
            f" (Ray dials {dialled} for {address}: start the cluster on this machine's address, not on 127.0.0.1)"
            if dialled != address
            else ""
        )
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}{via}") from exc


def _init_ray(ray, address: str | None) -> bool:
    """Connect (``address``: ``auto``, ``ray://...``, ``host:port``) or start a local instance;
    True when this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    _check_reachable(address)
    kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # a local instance for this run only
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
            f"{first_line(exc)} (start one with `ray start --head`, or drop --address "
            "for a local instance)"
        ) from exc
    return True


def run_on_ray(run: ExtractRun, options: RayOptions) -> None:
    """Extract ``run.sources`` on the Ray cluster ``options.address`` (see the module docstring).

    The videos and ``run.out_dir`` must be on paths every node sees; ``run.weights`` must be
    readable on every node (None: each node uses its own per-user cache, fetched once). A Ray
    session already initialised in this process is used as it is.
    """
    ray = import_ray()
    started_ray = _init_ray(ray, options.address)
    try:
        _run(ray, run, options.max_tasks, options.task_timeout_s)
    finally:
        if started_ray:
            ray.shutdown()


def _start_encoders(ray, gpus: int, settings: ExtractionSettings, weights: Path | None) -> list:
    """One I3D actor per GPU of the cluster (one CPU actor without GPUs); an actor that loads other
    weights than the driver's (their hash is part of the settings key) refuses to start."""
    actor_cls = ray.remote(I3DBatchEncoder).options(**({"num_gpus": 1} if gpus else {"num_cpus": 1}), max_restarts=1)
    weights_arg = str(Path(weights).expanduser().resolve()) if weights else None
    return [
        actor_cls.remote(
            weights=weights_arg,
            device="cuda" if gpus else "cpu",
            precision=settings.precision,
            runtime=settings.runtime,
            expect_weights_sha256=settings.weights_sha256,
            backbone=settings.backbone,
        )
        for _ in range(max(gpus, 1))
    ]


def _check_encoders(ray, actors: list, timeout_s: float) -> None:
    try:
        ray.get([a.weights_id.remote() for a in actors], timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        raise ConfigError(
            f"the I3D actor did not start on the cluster within {timeout_s:g} s (no free CPU/GPU, or a stalled node)"
        ) from exc
    except ray.exceptions.RayError as exc:
        raise ConfigError(f"the I3D actor could not start on the cluster: {cause_line(exc)}") from exc


def _run(ray, run: ExtractRun, max_tasks: int | None, timeout_s: float) -> None:
    settings, out_dir, report, collect = run.settings, run.out_dir, run.collect.report, run.collect
    resources = ray.cluster_resources()
    # the openvino runtime runs on CPUs only: its actor takes a CPU even on a cluster with GPUs
    gpus = 0 if settings.runtime == "openvino" else int(resources.get("GPU", 0))
    if settings.precision == "fp16" and not gpus:
        raise ConfigError("fp16 needs a CUDA device and the Ray cluster has no GPU; use fp32 or bf16")
    settings = settings.on_device("cuda" if gpus else "cpu")  # where the actors run (bf16: part of the key)
    report.settings_key = settings.key()
    # fileio imports only the standard library: a fresh Ray worker starts hashing at once
    hash_task = ray.remote(num_cpus=1)(sha256_file)
    video_task = ray.remote(num_cpus=1)(run_video)
    limit = max_tasks or max(1, int(resources.get("CPU", 1)))
    actors: list = []

    # 1. content hashes, in parallel; 2. names in input order, as the local executors give them
    hash_refs = [hash_task.remote(str(s)) for s in run.sources]
    namer = EntryNamer(out_dir)
    jobs: list[tuple[int, Path, str, str, int]] = []
    for i, (source, ref) in enumerate(zip(run.sources, hash_refs)):
        try:  # the local executors' checks and messages, in their order
            sha = ray.get(ref, timeout=timeout_s)
            size = source.stat().st_size
            named = namer.name(source, sha)
        except ray.exceptions.GetTimeoutError:
            collect.take(
                i, Failed(source, f"{source}: its hash task gave no result within {timeout_s:g} s (a stalled node?)")
            )
            continue
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            collect.take(i, Failed(source, f"{source}: {getattr(cause, 'strerror', None) or first_line(cause)}"))
            continue
        except Exception as exc:
            collect.take(i, Failed(source, job.failure_message(source, exc)))
            continue
        if isinstance(named, Duplicate):
            collect.take(i, named)
            continue
        # complete and current entries are skipped here, without a task (the task checks again
        # under the lock): a rerun over a finished cache starts no actor and takes no GPU
        entry = cache.reusable_entry(out_dir, named, source_sha256=sha, settings_key=settings.key())
        if entry is not None:
            collect.take(i, Skipped(source, entry))
            continue
        namer.computing(named, source)
        jobs.append((i, source, named, sha, size))
    if not jobs:
        return

    # 3. one task per video, at most `limit` in flight, actors in turn
    actors = _start_encoders(ray, gpus, settings, run.weights)
    settings_dict = settings.to_dict()
    in_flight: dict[Any, tuple[int, Path, float]] = {}  # ref -> (index, source, deadline)
    pending = list(reversed(jobs))
    by_index = {j[0]: j for j in jobs}
    waiting = _Waiting(out_dir, settings, timeout_s)
    stop = StopMarker(out_dir, uuid.uuid4().hex)
    loop_started = time.perf_counter()
    interrupted = False
    try:
        # the actors hold their CPU/GPU before any video task takes one: tasks waiting for an
        # actor no node has room for would hold their CPUs until the timeout (two drivers)
        _check_encoders(ray, actors, timeout_s)
        while pending or in_flight or waiting:
            for i, event in waiting.due():  # videos another run held: done by it, or free now
                if event is None:
                    pending.append(by_index[i])
                else:
                    collect.take(i, event)
            while pending and len(in_flight) < limit:
                i, source, stem, sha, size = pending.pop()
                ref = video_task.remote(
                    str(source),
                    stem,
                    sha,
                    size,
                    str(out_dir),
                    settings_dict,
                    run.batch_size,
                    actors[i % len(actors)],
                    timeout_s,
                    stop.run_id,
                )
                in_flight[ref] = (i, source, time.monotonic() + timeout_s)
            if not in_flight:  # only videos another run holds are left (or none: the loop ends)
                if waiting:
                    time.sleep(max(0.0, waiting.next_due() - time.monotonic()))
                continue
            first_deadline = min(min(d for _, _, d in in_flight.values()), waiting.next_due())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=max(0.0, first_deadline - time.monotonic()))
            if not ready:  # bounded: a task on a stalled node fails its video, the run goes on
                now = time.monotonic()
                for ref in [r for r, (_, _, d) in in_flight.items() if d <= now]:
                    i, source, _ = in_flight.pop(ref)
                    ray.cancel(ref, force=True)
                    collect.take(
                        i,
                        Failed(
                            source,
                            f"{source}: its Ray task gave no result within {timeout_s:g} s "
                            "(a stalled node?); cancelled",
                        ),
                    )
                continue
            for ref in ready:
                i, source, _ = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                    if result is None:  # another run holds the video
                        waiting.add(i, by_index[i])
                    else:
                        collect.add(i, result)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, CacheError):  # the cache is unwritable: stop, as locally
                        raise CacheError(str(cause)) from cause
                    collect.take(i, Failed(source, f"{source}: unexpected error in its Ray task: {cause_line(exc)}"))
                except ray.exceptions.RayError as exc:  # worker or node lost: this video only
                    collect.take(i, Failed(source, f"{source}: its Ray task was lost: {first_line(exc)}"))
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _stop_tasks(ray, list(in_flight), stop)
        report.loop_s = time.perf_counter() - loop_started
        if not interrupted:
            try:
                busy = ray.get([a.busy_s.remote() for a in actors], timeout=10)
                report.network_s = sum(busy) / len(actors)
            except Exception:  # a dead actor: only the timing is lost
                pass
        report.input_wait_s = max(0.0, report.loop_s - report.network_s)
        for a in actors:  # free the GPUs now, not when the driver exits
            ray.kill(a)


class _Waiting:
    """Videos whose claim another run held when their task ran. The driver (which sees the shared
    cache too) looks again every ``_RECLAIM_S``: the entry complete -> ``Skipped``; the claim free
    -> None (submit the task again); still held after ``timeout_s`` -> ``Failed``."""

    def __init__(self, out_dir: Path, settings: ExtractionSettings, timeout_s: float) -> None:
        self._out, self._settings, self._timeout_s = out_dir, settings, timeout_s
        self._videos: dict[int, tuple[tuple[int, Path, str, str, int], float, float]] = {}  # i -> job, since, due

    def __bool__(self) -> bool:
        return bool(self._videos)

    def add(self, i: int, video_job: tuple[int, Path, str, str, int]) -> None:
        since = self._videos[i][1] if i in self._videos else time.monotonic()
        self._videos[i] = (video_job, since, time.monotonic() + _RECLAIM_S)

    def next_due(self) -> float:
        return min((due for _, _, due in self._videos.values()), default=float("inf"))

    def due(self) -> list[tuple[int, Skipped | Failed | None]]:
        now, out = time.monotonic(), []
        for i, (video_job, since, due) in sorted(self._videos.items()):
            if due > now:
                continue
            _, source, stem, sha, _ = video_job
            claim = claim_entry(self._out, stem, source_sha256=sha, settings=self._settings, wait=False)
            if isinstance(claim, cache.CacheEntry):
                out.append((i, Skipped(source, claim)))
            elif claim is not None:
                claim.release()
                out.append((i, None))
            elif now - since > self._timeout_s:
                out.append(
                    (
                        i,
                        Failed(
                            source,
                            f"{source}: another run has held its cache entry for more than "
                            f"{self._timeout_s:g} s (a stalled run?)",
                        ),
                    )
                )
            else:
                self._videos[i] = (video_job, since, now + _RECLAIM_S)
                continue
            del self._videos[i]
        return out


def _stop_tasks(ray, refs: list, stop: StopMarker) -> None:
    """Stop the video tasks still running (Ctrl-C, or an error that stops the run) and wait, at
    most ``_STOP_WAIT_S``, for them to end. Each task sees the stop marker at its next frame,
    writes nothing and releases its video's claim (one already writing its entry finishes it
    atomically), so the driver exits with nothing of its run still running or held. No
    ``ray.cancel``: see ``StopMarker``. A task that does not end in time is killed with its job
    when the driver disconnects."""
    if not refs:
        return
    stop.set()
    try:
        ray.wait(refs, num_returns=len(refs), timeout=_STOP_WAIT_S, fetch_local=False)
    finally:
        stop.clear()
