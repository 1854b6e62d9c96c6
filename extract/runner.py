"""The thread executor: a decode thread beside the network, both in this process.

The claim thread names, claims and decodes the videos one after another into 16-frame clips
(PyAV releases the GIL while decoding), while the calling thread batches the clips through I3D
and writes each entry. The default on CPU, where the network is far slower than decoding.
"""

from __future__ import annotations

import queue
import threading
import time

import torch

from .claims import HeldLocks, claim_videos
from .encoder import ClipEncoder
from .events import Began, ClaimsDone, ClipDecoded, Duplicate, Ended, Failed, Skipped, VideoJob, queue_emitter
from .job import clips_per_batch, decode_video, write_video
from .options import ExtractRun

__all__ = ["run_in_thread"]


def run_in_thread(run: ExtractRun, encoder: ClipEncoder) -> None:
    """Extract ``run.sources``: claim and decode in a thread, encode and write in this one."""
    settings, report, collect = run.settings, run.collect.report, run.collect
    n_crops = len(settings.crop_names)
    per_batch = clips_per_batch(run.batch_size, n_crops)
    q: queue.Queue = queue.Queue(maxsize=max(2, 2 * per_batch))
    stop = threading.Event()
    locks = HeldLocks()
    claimer = threading.Thread(
        target=claim_videos,
        args=(run.sources,),
        name="vadpipe-decode",
        daemon=True,
        kwargs={
            "out_dir": run.out_dir,
            "settings": settings,
            "emit": queue_emitter(q, stop),
            "stop": stop,
            "locks": locks,
            "decode": decode_video,
        },
    )
    pending: list[torch.Tensor] = []  # clips of the video being decoded, not yet through the network

    def flush(job: VideoJob) -> None:
        if not pending:
            return
        t = time.perf_counter()
        feats = encoder(torch.cat(pending))  # (clips * crops, 1024)
        report.network_s += time.perf_counter() - t
        job.add_features(feats, n_crops)
        pending.clear()

    seq = 0
    t0 = time.perf_counter()
    claimer.start()
    try:
        while True:
            t = time.perf_counter()
            event = q.get()
            report.input_wait_s += time.perf_counter() - t
            if isinstance(event, ClaimsDone):
                break
            if isinstance(event, Began):
                collect.began(event.job.source)
            elif isinstance(event, ClipDecoded):
                event.job.clip_starts.append(event.start)
                pending.append(event.crops)
                if len(pending) >= per_batch:
                    flush(event.job)
                collect.clip()
            elif isinstance(event, Ended):
                try:
                    flush(event.job)
                    collect.add(seq, write_video(event.job, settings, event.frame_times, event.damage, run.out_dir))
                finally:
                    locks.release(event.job.lock)
                seq += 1
            elif isinstance(event, Skipped | Duplicate | Failed):
                pending.clear()  # a video failing in the middle of its clips
                collect.take(seq, event)
                seq += 1
    finally:
        report.loop_s = time.perf_counter() - t0
        stop.set()
        claimer.join(timeout=10)
        locks.release_all()
