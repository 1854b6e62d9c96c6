"""The Ray engine: ``vadpipe extract PATH... --engine ray [--address auto]`` across a cluster.

The per-video job is the local engine's, cut into Ray pieces:

1. hash tasks (one CPU each) read every video for its sha256, in parallel on the cluster;
2. the driver names the cache entries in input order (``StemAssigner``, so the names are the
   local engine's), drops in-run duplicates and skips entries that are complete and current;
3. one video task per remaining video (one CPU) takes the per-stem file lock, skips an entry
   that is complete and current, decodes and crops the clips, sends each batch (cut exactly as
   the local engine cuts it) to an ``I3DBatchEncoder`` actor, and writes the entry;
4. the driver collects the results, writes ``failures.jsonl`` and the report.

There is one encoder actor per GPU of the cluster (``num_gpus=1`` each), or a single CPU actor
when the cluster has none. The cache folder must be a path every node sees (NFS, Lustre, a
mounted bucket that supports renames and POSIX locks): records, locks and atomic renames are
plain files. ``s3://`` and other fsspec URLs are not supported (see the README).

Ray is an optional dependency (``pip install 'vadpipe[ray]'``), imported on first use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadpipe.errors import CacheError, ConfigError, VadpipeError, WeightsError

from . import cache
from .fileio import sha256_file
from .runner import (
    ClipEncoder,
    ExtractReport,
    VideoResult,
    _decode_video,
    _finish,
    _guarded,
    _Job,
    _lock,
    _progress,
    discover_inputs,
    open_report,
    select_device,
)
from .settings import ExtractionSettings
from .weights import load_i3d, resolve_weights

__all__ = ["I3DBatchEncoder", "extract_with_ray", "import_ray"]

_IN_FLIGHT_BATCHES = 2  # batches a video task may have queued at its actor (bounds object store use)


def import_ray():
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the Ray engine needs Ray, an optional extra: pip install 'vadpipe[ray]'") from exc
    return ray


class I3DBatchEncoder:
    """I3D held once per process: maps ``{"clips": uint8 (N, 3, T, S, S)}`` to ``{"features": (N, 1024)}``.

    Used as the Ray actor of the Ray engine; also a callable class for Ray Data's
    ``map_batches(I3DBatchEncoder, fn_constructor_kwargs=..., batch_format="numpy")``.

    Args:
        weights: weight file visible on the node, or None for the node's per-user cache.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``fp32`` (default), ``bf16`` or ``fp16`` (CUDA).
        runtime: ``torch`` (default) or ``openvino`` (CPU actors).
        threads: CPU threads for the network; None: every core of the node, as a local run uses
            (Ray itself would give an actor one), so CPU results equal the local engine's.
        expect_weights_sha256: refuse to start with other weights (their hash is in the settings key).
        backbone: the I3D network to load (None: the one the weights file is; else kinetics400-scratch).
    """

    def __init__(self, *, weights: str | None = None, device: str = "auto", precision: str = "fp32",
                 threads: int | None = None, expect_weights_sha256: str | None = None,
                 backbone: str | None = None, runtime: str = "torch") -> None:
        from .workers import usable_cpus

        dev = select_device(device)
        if dev.type == "cpu":
            torch.set_num_threads(threads or usable_cpus())
        model, self._weights_id = load_i3d(Path(weights) if weights else None, device=dev, backbone=backbone)
        if expect_weights_sha256 and self._weights_id != expect_weights_sha256:
            raise WeightsError(f"this node loads other I3D weights ({self._weights_id}) than the driver "
                               f"({expect_weights_sha256}): pass --weights with a file every node sees")
        self._encoder = ClipEncoder(model, dev, precision, runtime=runtime)
        self._busy_s = 0.0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        feats = self._encoder(torch.from_numpy(np.ascontiguousarray(batch["clips"])))
        self._busy_s += time.perf_counter() - t
        return {"features": feats}

    def encode(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same as calling the object (an explicit name for actor handles)."""
        return self(batch)

    def weights_id(self) -> str:
        return self._weights_id

    def busy_s(self) -> float:
        """Seconds spent in the network so far."""
        return self._busy_s


def _run_video(source: str, stem: str, sha256: str, size: int, out_dir: str, settings_dict: dict,
               batch_size: int, encoder: Any) -> dict:
    """Ray task: one video's cache entry under its per-stem lock; returns a ``VideoResult`` dict."""
    ray = import_ray()
    settings = ExtractionSettings.from_dict(settings_dict)
    out = Path(out_dir)
    src = Path(source)
    n_crops = len(settings.crop_names)
    # blocking: another process computing this video finishes it first, and then it is skipped
    with _lock(out, stem):
        rec = cache.reusable_record(out, stem, source_sha256=sha256, settings_key=settings.key())
        if rec is not None:
            return asdict(VideoResult(source, "skipped", stem, rec.clips.count))
        job = _Job(source=src, stem=stem, sha256=sha256, size=size)
        pending: list[np.ndarray] = []
        batches: list[tuple[Any, int]] = []  # (ObjectRef of the features, clips in the batch)
        outcome: dict[str, Any] = {}

        def submit() -> None:
            if not pending:
                return
            ref = encoder.encode.remote({"clips": np.concatenate(pending)})
            batches.append((ref, len(pending)))
            pending.clear()
            refs = [r for r, _ in batches]
            if len(refs) > _IN_FLIGHT_BATCHES:  # keep decoding ahead, but only a little
                ray.wait(refs, num_returns=len(refs) - _IN_FLIGHT_BATCHES, fetch_local=False)

        def put(event) -> bool:
            kind = event[0]
            if kind == "clip":
                job.clip_starts.append(event[2])
                pending.append(event[3].numpy())
                if len(pending) * n_crops >= batch_size:
                    submit()
            elif kind == "end":
                submit()
                outcome["end"] = event[2:]
            elif kind == "fail":
                outcome["fail"] = event[2]
            return True

        never = threading.Event()  # Ray cancels tasks itself
        _guarded(lambda s, wait: _decode_video(job, settings, put, never), src, put, wait=False)
        if "fail" in outcome:
            return asdict(VideoResult(source, "failed", error=outcome["fail"]))
        try:
            for ref, n in batches:
                feats = ray.get(ref)["features"]
                job.feats.extend(feats[i * n_crops:(i + 1) * n_crops] for i in range(n))
        except ray.exceptions.RayError as exc:
            return asdict(VideoResult(source, "failed", error=f"{src}: the network actor failed: {_cause_line(exc)}"))
        times, damage = outcome["end"]
        return asdict(_finish(job, settings, times, damage, out))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _init_ray(ray, address: str | None) -> bool:
    """Connect (``address``: ``auto``, ``ray://...``, ``host:port``) or start a local instance;
    True when this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # a local instance for this run only
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                          f"{_first_line(exc)} (start one with `ray start --head`, or drop --address "
                          "for a local instance)") from exc
    return True


def extract_with_ray(
    inputs: Iterable[Path],
    *,
    out_dir: Path,
    settings: ExtractionSettings = ExtractionSettings(),
    weights: Path | None = None,
    batch_size: int = 8,
    address: str | None = None,
    max_tasks: int | None = None,
    progress: bool = True,
    on_result: Callable[[VideoResult], None] | None = None,
) -> ExtractReport:
    """Extract I3D features of every video under ``inputs`` into ``out_dir`` with Ray.

    Args:
        inputs: video files and/or folders, on paths every node sees.
        out_dir: cache folder on a path every node sees (same layout as the local engine's).
        settings, weights, batch_size: as ``extract_paths``; ``weights`` must be readable on
            every node (None: each node uses its own per-user cache, fetched once).
        address: Ray cluster to join (``auto`` = the one ``ray start`` made on this machine);
            None: ``$RAY_ADDRESS``, else a local instance started for this call. A Ray
            session already initialised in this process is used as it is.
        max_tasks: video tasks in flight at once; None: the cluster's CPU count.
        progress: rich progress bar on stderr.
        on_result: called with each video's result when it is known.

    Returns:
        An ``ExtractReport`` like the local engine's, results in input order (missing paths first).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if max_tasks is not None and max_tasks < 1:
        raise ConfigError(f"max_tasks must be >= 1, got {max_tasks}")
    ray = import_ray()
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()  # tasks run in other working directories
    sources, results = discover_inputs(inputs, out_dir)
    # the weights' identity is part of the settings key: resolve it here (fails fast, offline hint)
    _, weights_id = resolve_weights(weights, backbone=settings.backbone)
    settings = settings.with_weights(weights_id)
    report = open_report(out_dir, settings, results, on_result=on_result)
    if not sources:
        report.seconds = time.perf_counter() - started
        return report

    started_ray = _init_ray(ray, address)
    try:
        done = _run(ray, sources, out_dir, settings, weights, batch_size, max_tasks, progress, on_result, report)
        report.results.extend(done[i] for i in sorted(done))
    finally:
        if started_ray:
            ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report


def _start_encoders(ray, gpus: int, settings: ExtractionSettings, weights: Path | None) -> list:
    """One I3D actor per GPU of the cluster (one CPU actor without GPUs); an actor that loads other
    weights than the driver's (their hash is part of the settings key) refuses to start."""
    actor_cls = ray.remote(I3DBatchEncoder).options(**({"num_gpus": 1} if gpus else {"num_cpus": 1}),
                                                    max_restarts=1)
    weights_arg = str(Path(weights).expanduser().resolve()) if weights else None
    return [actor_cls.remote(weights=weights_arg, device="cuda" if gpus else "cpu", precision=settings.precision,
                             runtime=settings.runtime, expect_weights_sha256=settings.weights_sha256,
                             backbone=settings.backbone)
            for _ in range(max(gpus, 1))]


def _check_encoders(ray, actors: list) -> None:
    try:
        ray.get([a.weights_id.remote() for a in actors])
    except ray.exceptions.RayError as exc:
        raise ConfigError(f"the I3D actor could not start on the cluster: {_cause_line(exc)}") from exc


def _cause_line(exc: BaseException) -> str:
    """The line of a Ray error that says what went wrong in the remote code (not Ray's framing)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error: " in line:
            return line[:300]
    return _first_line(exc)


def _run(ray, sources: list[Path], out_dir: Path, settings: ExtractionSettings, weights: Path | None,
         batch_size: int, max_tasks: int | None, progress: bool,
         on_result: Callable[[VideoResult], None] | None, report: ExtractReport) -> dict[int, VideoResult]:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if settings.precision == "fp16" and not gpus:
        raise ConfigError("fp16 needs a CUDA device and the Ray cluster has no GPU; use fp32 or bf16")
    # fileio imports only the standard library: a fresh Ray worker starts hashing at once
    hash_task = ray.remote(num_cpus=1)(sha256_file)
    video_task = ray.remote(num_cpus=1)(_run_video)
    limit = max_tasks or max(1, int(resources.get("CPU", 1)))
    key = settings.key()
    done: dict[int, VideoResult] = {}
    actors: list = []

    with _progress(progress) as bar:
        videos_task = bar.add_task("videos", total=len(sources), rate="")

        def finished(i: int, result: VideoResult) -> None:
            done[i] = result
            if result.status == "failed":
                cache.append_failure(out_dir, Path(result.source), result.error or "failed")
            if on_result:
                on_result(result)
            bar.advance(videos_task)

        # 1. content hashes, in parallel; 2. names in input order, as the local engine gives them
        hash_refs = [hash_task.remote(str(s)) for s in sources]
        assigner = cache.StemAssigner(out_dir)
        computed: dict[str, Path] = {}
        jobs: list[tuple[int, Path, str, str, int]] = []
        for i, (source, ref) in enumerate(zip(sources, hash_refs)):
            try:  # the local engine's checks and messages, in its order
                sha, size = ray.get(ref), source.stat().st_size
                stem = assigner.assign(source, sha)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                message = f"{source}: {getattr(cause, 'strerror', None) or _first_line(cause)}"
                finished(i, VideoResult(str(source), "failed", error=message))
                continue
            except OSError as exc:
                finished(i, VideoResult(str(source), "failed", error=f"{source}: {exc.strerror or exc}"))
                continue
            except VadpipeError as exc:
                finished(i, VideoResult(str(source), "failed", error=str(exc)))
                continue
            if stem in computed:
                finished(i, VideoResult(str(source), "skipped", stem, note=f"same content as {computed[stem]}"))
                continue
            # complete and current entries are skipped here, without a task (the task checks again
            # under the lock): a rerun over a finished cache starts no actor and takes no GPU
            rec = cache.reusable_record(out_dir, stem, source_sha256=sha, settings_key=key)
            if rec is not None:
                finished(i, VideoResult(str(source), "skipped", stem, rec.clips.count))
                continue
            computed[stem] = source
            jobs.append((i, source, stem, sha, size))
        if not jobs:
            return done

        # 3. one task per video, at most `limit` in flight, actors in turn
        actors = _start_encoders(ray, gpus, settings, weights)
        settings_dict = settings.to_dict()
        in_flight: dict[Any, tuple[int, Path]] = {}
        pending = list(reversed(jobs))
        loop_started = time.perf_counter()
        checked = False
        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    i, source, stem, sha, size = pending.pop()
                    ref = video_task.remote(str(source), stem, sha, size, str(out_dir), settings_dict, batch_size,
                                            actors[i % len(actors)])
                    in_flight[ref] = (i, source)
                if not checked:  # the first tasks start decoding while the actors load the network
                    _check_encoders(ray, actors)
                    checked = True
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    i, source = in_flight.pop(ref)
                    try:
                        finished(i, VideoResult(**ray.get(ref)))
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, CacheError):  # the cache is unwritable: stop, as locally
                            raise CacheError(str(cause)) from cause
                        message = f"{source}: unexpected error in its Ray task: {_cause_line(exc)}"
                        finished(i, VideoResult(str(source), "failed", error=message))
                    except ray.exceptions.RayError as exc:  # worker or node lost: this video only
                        finished(i, VideoResult(str(source), "failed",
                                                error=f"{source}: its Ray task was lost: {_first_line(exc)}"))
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            for ref in in_flight:
                ray.cancel(ref)
            report.loop_s = time.perf_counter() - loop_started
            try:
                busy = ray.get([a.busy_s.remote() for a in actors], timeout=10)
                report.network_s = sum(busy) / len(actors)
            except Exception:  # a dead actor: only the timing is lost
                pass
            report.input_wait_s = max(0.0, report.loop_s - report.network_s)
            for a in actors:  # free the GPUs now, not when the driver exits
                ray.kill(a)
    return done
