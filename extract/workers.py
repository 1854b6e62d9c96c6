"""The decode-process executor: decode processes feeding one network, ``vadpipe extract --decode-procs N``.

On a GPU the network outruns one decoding thread by far, so N processes (started from a fork
server, see ``procs.process_context``) decode, resize and crop whole videos, one video per process at
a time, each writing its clips into slots of one shared-memory array and sending only the slot
number. The main process gathers each video's clips into one of two batch buffers (pinned on
CUDA, so the copy to the device is asynchronous DMA) while a network thread runs the batch in
the other one, so the network waits only when no clips are ready. The video job is
``vadpipe.extract.job``'s (claim thread, batch rule, entry writer), so the cache, the naming,
the skipping and the failure records are the thread executor's, byte for byte on CPU.

A video that fails to decode is reported as in the thread executor; a worker process that
dies (segfault in a decoder, OOM killer) fails only the video it held and is replaced. Each
worker holds ``ceil(batch_size / n_crops) + 2`` clip slots, so the shared memory is about
``workers * (batch_size + 2 * n_crops) * 3 * clip_len * crop_size**2`` bytes (2.4 MB per
centre-crop clip), checked against the free ``/dev/shm`` before they start (``docker run
--shm-size=1g``). Each decodes with ``procs.decode_threads`` threads: its share of the cores.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from . import job
from .claims import HeldLocks, claim_videos
from .encoder import ClipEncoder
from .events import Began, Claimed, ClaimsDone, ClipDecoded, Ended, Event, Failed, VideoJob, queue_emitter
from .options import DecodeProcessOptions, ExtractRun
from .procs import (
    check_shared_memory,
    decode_threads,
    default_workers,
    exit_reason,
    process_context,
    shared_memory_free,
)
from .results import VideoResult
from .settings import ExtractionSettings

__all__ = ["run_with_decode_processes"]

_EXTRA_SLOTS = 2  # clips a worker may decode ahead of the network beyond one batch


# --------------------------------------------------------------------------------------------
# messages between the main process and a decode process


@dataclass(frozen=True)
class _Decode:  # main -> worker: decode this video
    job_id: int
    source: str


@dataclass(frozen=True)
class _Free:  # main -> worker: these clip slots are free again
    slots: list[int]


@dataclass(frozen=True)
class _Stop:  # main -> worker
    pass


@dataclass(frozen=True)
class _Clip:  # worker -> main: a clip, in its shared-memory slot
    job_id: int
    start: int
    slot: int


@dataclass(frozen=True)
class _Event:  # worker -> main: the video's Began, Ended or Failed event
    job_id: int
    event: Began | Ended | Failed


# --------------------------------------------------------------------------------------------
# worker process


def _worker_main(
    conn: Connection, slots: torch.Tensor, first_slot: int, n_slots: int, settings_dict: dict, threads: int
) -> None:
    """Worker process: decode the videos the parent sends, one at a time, into its own clip slots,
    with ``threads`` decoder threads (its share of the cores)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    torch.set_num_threads(1)  # one process per core; the decoder has its share of the cores
    settings = ExtractionSettings.from_dict(settings_dict)
    free = set(range(first_slot, first_slot + n_slots))
    stop = threading.Event()

    def take_slot() -> int | None:
        while not free:
            msg = conn.recv()
            if isinstance(msg, _Free):
                free.update(msg.slots)
            elif isinstance(msg, _Stop):
                stop.set()
                return None
        return min(free)

    try:
        while not stop.is_set():
            msg = conn.recv()
            if isinstance(msg, _Free):
                free.update(msg.slots)
                continue
            if isinstance(msg, _Stop):
                return
            video = VideoJob(source=Path(msg.source), stem="", sha256="", size=0)

            def emit(event: Event, job_id: int = msg.job_id) -> bool:
                if isinstance(event, ClipDecoded):
                    slot = take_slot()
                    if slot is None:
                        return False
                    free.discard(slot)
                    slots[slot].copy_(event.crops)
                    conn.send(_Clip(job_id, event.start, slot))
                else:
                    conn.send(_Event(job_id, event))
                return True

            job.guarded(video.source, emit, job.decode_video, video, settings, emit, stop, threads)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone


@dataclass
class _Worker:
    index: int
    first_slot: int
    proc: mp.process.BaseProcess | None = None
    conn: Connection | None = None
    job_id: int | None = None


@dataclass
class _Active:
    job: VideoJob
    seq: int
    worker: _Worker
    slots: list[int] = field(default_factory=list)
    outstanding: int = 0  # batches queued at the network thread


class _Doorbell(queue.Queue):
    """The claim thread's queue, plus a pipe that becomes readable on every put, so the main
    loop can wait for claims and worker messages in one ``wait`` call."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.fd_read, self._fd_write = os.pipe()
        os.set_blocking(self.fd_read, False)
        os.set_blocking(self._fd_write, False)

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        try:
            os.write(self._fd_write, b"\0")
        except BlockingIOError:  # already ringing
            pass

    def take(self):
        """One item or None; clears the bell when empty."""
        try:
            return self.get_nowait()
        except queue.Empty:
            try:
                while os.read(self.fd_read, 4096):
                    pass
            except BlockingIOError:
                pass
            try:  # a put between the get and the read: do not lose its ring
                return self.get_nowait()
            except queue.Empty:
                return None

    def close(self) -> None:
        os.close(self.fd_read)
        os.close(self._fd_write)


class _Pool:
    """The worker processes, their pipes and their shared clip slots."""

    def __init__(self, n: int, settings: ExtractionSettings, clips_per_batch: int) -> None:
        self.ctx = process_context()  # not fork: that would copy the network and any CUDA state
        self.settings_dict = settings.to_dict()
        self.per_worker = clips_per_batch + _EXTRA_SLOTS
        self.threads = decode_threads(n)
        S, L = settings.crop_size, settings.clip_len
        shape = (n * self.per_worker, len(settings.crop_names), 3, L, S, S)
        check_shared_memory(math.prod(shape), shared_memory_free())  # uint8: one byte each
        self.slots = torch.empty(shape, dtype=torch.uint8).share_memory_()
        self.workers = [_Worker(i, i * self.per_worker) for i in range(n)]
        for w in self.workers:
            self.start(w)

    def start(self, w: _Worker) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        w.proc = self.ctx.Process(
            target=_worker_main,
            name=f"vadpipe-decode-{w.index}",
            daemon=True,
            args=(child, self.slots, w.first_slot, self.per_worker, self.settings_dict, self.threads),
        )
        w.proc.start()
        child.close()  # only the worker holds its end: its death shows as EOF here
        w.conn = parent
        w.job_id = None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask every worker to stop and close the pipes: a worker in the middle of a video stops
        at its next clip (its send fails), an idle one at once."""
        running = [w for w in self.workers if w.proc is not None]
        for w in running:
            try:
                w.conn.send(_Stop())
            except OSError:
                pass
            w.conn.close()
        deadline = time.monotonic() + timeout_s
        for w in running:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1.0)


class _Network(threading.Thread):
    """The network on a thread of its own, fed batches in order through two batch buffers.

    While it runs one batch (on CUDA: the asynchronous copy from pinned memory, then the
    kernels), the main thread gathers the next one into the other buffer, so the network waits
    only when no clips are ready. Batches are run in the order they are queued.
    """

    def __init__(self, encoder: ClipEncoder, buffers: list[torch.Tensor], n_crops: int) -> None:
        super().__init__(name="vadpipe-network", daemon=True)
        self.encoder = encoder
        self.n_crops = n_crops
        self.todo: queue.Queue = queue.Queue()
        self.free: queue.Queue = queue.Queue()
        for buf in buffers:
            self.free.put(buf)
        self.done = threading.Condition()
        self.error: BaseException | None = None
        self.network_s = self.wait_s = 0.0

    def submit(self, a: _Active, buf: torch.Tensor, n_clips: int) -> None:
        with self.done:
            a.outstanding += 1
        self.todo.put((a, buf, n_clips))

    def wait_for(self, a: _Active) -> None:
        """Until every batch of ``a`` has run; re-raises the network's error (e.g. out of memory)."""
        with self.done:
            while a.outstanding and self.error is None:
                self.done.wait()
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        n = self.n_crops
        while True:
            t = time.perf_counter()
            item = self.todo.get()
            self.wait_s += time.perf_counter() - t
            if item is None:
                return
            a, buf, n_clips = item
            try:
                if self.error is None:
                    t = time.perf_counter()
                    feats = self.encoder(buf[: n_clips * n])
                    self.network_s += time.perf_counter() - t
                    a.job.add_features(feats, n)
            except BaseException as exc:  # handed to the main thread, which stops the run
                self.error = exc
            finally:
                self.free.put(buf)
                with self.done:
                    a.outstanding -= 1
                    self.done.notify_all()


def run_with_decode_processes(run: ExtractRun, options: DecodeProcessOptions, encoder: ClipEncoder) -> None:
    """Extract ``run.sources``: a claim thread, ``options.processes`` decode processes, the
    network on a thread of its own, and this thread writing the entries.

    Batches are cut as the thread executor cuts them (``job.clips_per_batch``), so the cache is
    the same; ``network_s``/``input_wait_s``/``loop_s`` tell how busy the network was.
    """
    settings, report, collect = run.settings, run.collect.report, run.collect
    n_workers = options.processes if options.processes is not None else max(1, default_workers(encoder.device))
    n_workers = min(n_workers, len(run.sources))  # one video per worker at a time
    n_crops = len(settings.crop_names)
    per_batch = job.clips_per_batch(run.batch_size, n_crops)
    pin = encoder.device.type == "cuda"
    S, L = settings.crop_size, settings.clip_len
    buffers = [
        torch.empty((per_batch * n_crops, 3, L, S, S), dtype=torch.uint8, pin_memory=pin) for _ in range(2)
    ]  # one being run, one being filled
    network = _Network(encoder, buffers, n_crops)

    claims = _Doorbell(maxsize=n_workers + 2)
    stop = threading.Event()
    locks = HeldLocks()

    def hand_over(video: VideoJob, _settings, emit, _stop) -> bool:
        return emit(Claimed(video))  # the main loop sends it to a worker; the lock stays held

    claimer = threading.Thread(
        target=claim_videos,
        args=(run.sources,),
        name="vadpipe-claim",
        daemon=True,
        kwargs={
            "out_dir": run.out_dir,
            "settings": settings,
            "emit": queue_emitter(claims, stop),
            "stop": stop,
            "locks": locks,
            "decode": hand_over,
        },
    )
    active: dict[int, _Active] = {}
    ready: deque[tuple[int, VideoJob]] = deque()
    seq = 0
    claims_done = False
    pool: _Pool | None = None

    def flush(a: _Active) -> None:
        """Gather ``a``'s pending clips into a free buffer and queue it for the network."""
        if not a.slots:
            return
        buf = network.free.get()  # waits while the network still holds both buffers
        if network.error is not None:
            raise network.error
        torch.cat([pool.slots[s] for s in a.slots], out=buf[: len(a.slots) * n_crops])
        a.worker.conn.send(_Free(a.slots))
        network.submit(a, buf, len(a.slots))
        a.slots = []

    def drop(job_id: int, message: str) -> None:
        a = active.pop(job_id)
        a.worker.job_id = None
        if a.slots:
            try:
                a.worker.conn.send(_Free(a.slots))
            except OSError:
                pass
        locks.release(a.job.lock)
        collect.add(a.seq, VideoResult(str(a.job.source), "failed", error=message))

    def handle(w: _Worker, msg: _Clip | _Event) -> None:
        a = active[msg.job_id]
        if isinstance(msg, _Clip):
            a.job.clip_starts.append(msg.start)
            a.slots.append(msg.slot)
            if len(a.slots) >= per_batch:
                flush(a)
            collect.clip()
            return
        event = msg.event
        if isinstance(event, Began):
            a.job.info = event.info
            collect.began(a.job.source)
        elif isinstance(event, Ended):
            try:
                flush(a)
                network.wait_for(a)
                result = job.write_video(a.job, settings, event.frame_times, event.damage, run.out_dir)
            finally:
                locks.release(a.job.lock)
            del active[msg.job_id]
            w.job_id = None
            collect.add(a.seq, result)
        elif isinstance(event, Failed):
            drop(msg.job_id, event.error)

    def worker_died(w: _Worker) -> None:
        try:  # messages it sent before dying still count (e.g. its last video's end)
            while w.conn.poll():
                handle(w, w.conn.recv())
        except (EOFError, OSError):
            pass
        w.proc.join(1.0)
        reason = exit_reason(w.proc.exitcode)
        w.conn.close()
        w.proc = w.conn = None  # restarted when there is work for it
        if w.job_id is not None:
            a = active[w.job_id]
            a.slots = []  # the slots die with the worker's free list; the new worker starts fresh
            drop(w.job_id, f"{a.job.source}: the decoding process died ({reason})")

    loop_started = time.perf_counter()
    try:
        network.start()
        claimer.start()
        while True:
            # take claims while some worker could use one
            while not claims_done and len(ready) < n_workers:
                event = claims.take()
                if event is None:
                    break
                if isinstance(event, ClaimsDone):
                    claims_done = True
                    break
                if isinstance(event, Claimed):
                    ready.append((seq, event.job))
                else:
                    collect.take(seq, event)
                seq += 1
            if ready and pool is None:  # not before: a run that only skips starts no process
                pool = _Pool(n_workers, settings, per_batch)
            for w in pool.workers if pool else ():
                if w.job_id is None and ready:
                    if w.proc is None:
                        pool.start(w)
                    s, video = ready.popleft()
                    active[s] = _Active(job=video, seq=s, worker=w)
                    w.job_id = s
                    w.conn.send(_Decode(s, str(video.source)))
            if claims_done and not ready and not active:
                break
            workers_now = [w for w in pool.workers if w.proc is not None] if pool else []
            watch: list = [w.conn for w in workers_now] + [w.proc.sentinel for w in workers_now]
            if not claims_done and len(ready) < n_workers:
                watch.append(claims.fd_read)
            ready_objs = wait(watch)
            for w in workers_now:
                if w.conn in ready_objs:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        worker_died(w)
                        continue
                    handle(w, msg)
                elif w.proc.sentinel in ready_objs:
                    worker_died(w)
    finally:
        report.loop_s = time.perf_counter() - loop_started
        stop.set()
        network.todo.put(None)
        network.join(timeout=60)
        report.network_s, report.input_wait_s = network.network_s, network.wait_s
        if pool is not None:
            pool.stop()
        claimer.join(timeout=10)
        locks.release_all()
        if not claimer.is_alive():  # one still waiting for a lock may yet ring: keep its pipe
            claims.close()
