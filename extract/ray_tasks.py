"""What the Ray engine runs on the cluster's workers: the I3D actor, the video task, and the
stop marker through which a driver stops its tasks (``ray_engine`` is the driver's side).

Ray is an optional dependency (``pip install 'vadpipe[ray]'``), imported on first use.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vadpipe.errors import ConfigError, WeightsError

from . import cache, job
from .claims import LOCK_DIR, claim_entry
from .encoder import ClipEncoder, select_device
from .events import ClipDecoded, Ended, Event, Failed, VideoJob
from .procs import usable_cpus
from .results import VideoResult
from .settings import ExtractionSettings
from .weights import load_i3d

__all__ = ["I3DBatchEncoder", "StopMarker", "import_ray", "run_video", "first_line", "cause_line"]

_IN_FLIGHT_BATCHES = 2  # batches a video task may have queued at its actor (bounds object store use)
_STOP_POLL_S = 0.2  # how often a video task looks for its run's stop marker


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

    def __init__(
        self,
        *,
        weights: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        expect_weights_sha256: str | None = None,
        backbone: str | None = None,
        runtime: str = "torch",
    ) -> None:
        dev = select_device(device, runtime=runtime)
        if dev.type == "cpu":
            torch.set_num_threads(threads or usable_cpus())
        model, self._weights_id = load_i3d(Path(weights) if weights else None, device=dev, backbone=backbone)
        if expect_weights_sha256 and self._weights_id != expect_weights_sha256:
            raise WeightsError(
                f"this node loads other I3D weights ({self._weights_id}) than the driver "
                f"({expect_weights_sha256}): pass --weights with a file every node sees"
            )
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


class StopMarker:
    """The stop signal of one driver's run, seen by its tasks on every node: a file in the cache
    folder (which every node sees). The driver creates it on Ctrl-C instead of ``ray.cancel``-ing
    running tasks: a cancel that races the task's own completion reply makes Ray's core abort the
    driver (``TaskManager::CompletePendingTask``, "An unexpected system state has occurred").

    ``is_set`` has ``threading.Event``'s meaning for ``decode_video``; it looks at the file at most
    every ``_STOP_POLL_S`` (it is asked once per decoded frame)."""

    def __init__(self, out_dir: Path, run_id: str) -> None:
        self.run_id = run_id
        self.path = out_dir / LOCK_DIR / f"stop-{run_id}"
        self._seen, self._next_look = False, 0.0

    def set(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self._seen and now >= self._next_look:
            self._seen, self._next_look = self.path.exists(), now + _STOP_POLL_S
        return self._seen


def run_video(
    source: str,
    stem: str,
    sha256: str,
    size: int,
    out_dir: str,
    settings_dict: dict,
    batch_size: int,
    encoder: Any,
    timeout_s: float,
    run_id: str,
) -> VideoResult | None:
    """Ray task: the video job for one video, its clips encoded by the ``encoder`` actor; None
    when another process (another driver's task, a local run) holds the video's claim, or when
    the driver stopped the run (``StopMarker``) before the video was written."""
    ray = import_ray()
    settings = ExtractionSettings.from_dict(settings_dict)
    out = Path(out_dir)
    src = Path(source)
    n_crops = len(settings.crop_names)
    per_batch = job.clips_per_batch(batch_size, n_crops)
    # not blocking: a task waiting for another run's lock would hold a CPU that run may need
    # (for its actor), so the driver waits instead and asks again (``_Waiting``)
    claim = claim_entry(out, stem, source_sha256=sha256, settings=settings, wait=False)
    if claim is None:
        return None
    if isinstance(claim, cache.CacheEntry):
        return VideoResult.skipped(source, claim)
    try:
        video = VideoJob(source=src, stem=stem, sha256=sha256, size=size)
        pending: list[np.ndarray] = []
        batches: list[Any] = []  # ObjectRefs of the features of each batch
        outcome: dict[str, Any] = {}

        def submit() -> None:
            if not pending:
                return
            batches.append(encoder.encode.remote({"clips": np.concatenate(pending)}))
            pending.clear()
            if len(batches) > _IN_FLIGHT_BATCHES:  # keep decoding ahead, but only a little
                ray.wait(batches, num_returns=len(batches) - _IN_FLIGHT_BATCHES, fetch_local=False, timeout=timeout_s)

        def emit(event: Event) -> bool:
            if isinstance(event, ClipDecoded):
                video.clip_starts.append(event.start)
                pending.append(event.crops.numpy())
                if len(pending) >= per_batch:
                    submit()
            elif isinstance(event, Ended):
                submit()
                outcome["end"] = event
            elif isinstance(event, Failed):
                outcome["fail"] = event.error
            return True

        stop = StopMarker(out, run_id)
        job.guarded(src, emit, job.decode_video, video, settings, emit, stop)
        if "fail" in outcome:
            return VideoResult(source, "failed", error=outcome["fail"])
        if "end" not in outcome:  # stopped: the claim is released, nothing of the entry written
            return None
        try:
            for ref in batches:
                if not _ready_unless_stopped(ray, ref, timeout_s, stop):
                    return None  # stopped while the actor had the batch: nothing written
                video.add_features(ray.get(ref)["features"], n_crops)
        except ray.exceptions.GetTimeoutError:
            return VideoResult(
                source, "failed", error=f"{src}: the I3D actor gave no result within {timeout_s:g} s (a stalled node?)"
            )
        except ray.exceptions.RayError as exc:
            return VideoResult(source, "failed", error=f"{src}: the network actor failed: {cause_line(exc)}")
        end = outcome["end"]
        return job.write_video(video, settings, end.frame_times, end.damage, out)
    finally:
        claim.release()


def _ready_unless_stopped(ray, ref: Any, timeout_s: float, stop: StopMarker) -> bool:
    """Wait for an actor's result, looking at the stop marker meanwhile; False when stopped.
    Raises ``GetTimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise ray.exceptions.GetTimeoutError(f"no result within {timeout_s:g} s")
        ready, _ = ray.wait([ref], timeout=min(left, _STOP_POLL_S), fetch_local=False)
        if ready:
            return True
    return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def cause_line(exc: BaseException) -> str:
    """The line of a Ray error that says what went wrong in the remote code (not Ray's framing)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error: " in line:
            return line[:300]
    return first_line(exc)
