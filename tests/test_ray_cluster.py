"""The Ray engine on a real multi-node cluster on this machine (``ray.cluster_utils.Cluster``: a head
and worker nodes, each with its own raylet and object store) while nodes die or stall.

Each test has a hard time bound: the extraction runs in a thread that must finish within it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from test_workers import BATCH, SMALL, snapshot  # noqa: E402

from vadpipe.errors import ConfigError  # noqa: E402
from vadpipe.extract.engines import extract_videos  # noqa: E402
from vadpipe.extract.options import RayOptions  # noqa: E402
from vadpipe.extract.settings import ExtractionSettings  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster and the real I3D

N_VIDEOS = 6
BOUND_S = 240.0  # one extraction on a loaded 2-core machine (about 20-40 s when idle)


@pytest.fixture
def cluster(monkeypatch, tmp_path_factory):
    """A head without CPUs (it schedules nothing) and two worker nodes of 2 CPUs each, under a temp
    dir of their own (short: Ray's socket paths must stay under 108 characters); the test process
    is the driver."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    root = Path(os.path.realpath(tmp_path_factory.mktemp("rc", numbered=True)))
    if len(str(root)) > 40:
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="vprc-", dir="/tmp"))
    (root / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(root))  # Ray writes its "current cluster" file there
    c = Cluster(
        initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False, temp_dir=str(root / "ray"))
    )
    for _ in range(2):
        c.add_node(num_cpus=2)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield c
    finally:
        for node in c.worker_nodes:  # a stopped process must run again to be killed cleanly
            for pid in _descendants(node.all_processes["raylet"][0].process.pid):
                _signal(pid, signal.SIGCONT)
        ray.shutdown()
        c.shutdown()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (from /proc: no psutil)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _actor_node(c: Cluster, deadline: float):
    """The worker node whose raylet runs the I3D actor's process (once it has started)."""
    while time.monotonic() < deadline:
        for node in c.worker_nodes:
            for pid in _descendants(node.all_processes["raylet"][0].process.pid):
                if "I3DBatchEncoder" in _cmdline(pid):
                    return node, pid
        time.sleep(0.2)
    raise AssertionError("the I3D actor did not start")


def _wait_for(cond, deadline: float, what: str) -> None:
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _videos(make_video) -> list[Path]:
    return [make_video(f"v{i}.mp4", n_frames=32 + 8 * (i % 3), width=96, height=64, seed=i) for i in range(N_VIDEOS)]


def _in_thread(fn, bound: float = BOUND_S):
    """Run ``fn`` in a thread; its result, or AssertionError when it is not done within ``bound`` s."""
    box: dict = {}

    def go():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test)
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def _join(t, box, bound: float = BOUND_S):
    t0 = time.monotonic()
    t.join(bound)
    assert not t.is_alive(), f"the run did not end within {bound} s (a hang)"
    if "error" in box:
        raise box["error"]
    return box["value"], time.monotonic() - t0


@pytest.fixture
def reference(i3d_cpu, tmp_path):
    """The local engine's cache of the same videos."""

    def make(videos: list[Path]) -> dict[str, bytes]:
        out = tmp_path / "reference"
        extract_videos(
            videos,
            out_dir=out,
            settings=ExtractionSettings(**SMALL).with_weights(i3d_cpu[1]),
            encoder=i3d_cpu[0],
            batch_size=BATCH,
            progress=False,
        )
        return snapshot(out)

    return make


def _check_cache(out: Path, report, ref: dict[str, bytes]) -> set[str]:
    """Every video ok (its entry byte-identical to the local engine's) or failed by name; nothing
    half-written. Returns the names of the finished entries."""
    snap = snapshot(out)
    finished = {r.stem for r in report.results if r.status in ("ok", "skipped")}
    for r in report.results:
        assert r.status in ("ok", "skipped", "failed"), r
        if r.status == "failed":
            assert r.error and r.error.startswith(r.source), r.error  # named, one line
    for stem in finished:
        names = [n for n in ref if n.startswith(stem + ".") or n.startswith(stem + "__")]
        assert names and all(snap[n] == ref[n] for n in names), stem
    assert set(snap) <= set(ref)  # nothing that the local engine would not write
    records = {n.removesuffix(".json") for n in snap if n.endswith(".json")}
    assert records == finished  # no record without its features, no features marked finished wrongly
    assert not list(out.glob(".*.tmp"))  # no temp files
    return finished


def _rerun_resumes(out: Path, videos, first, ref) -> None:
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if p.suffix in (".npy", ".json")}
    done_before = {r.stem for r in first.results if r.status == "ok"}
    again = extract_videos(
        videos,
        out_dir=out,
        settings=ExtractionSettings(**SMALL),
        batch_size=BATCH,
        executor=RayOptions(),
        progress=False,
    )
    assert again.counts().get("failed", 0) == 0
    assert again.counts().get("ok", 0) == N_VIDEOS - len(done_before)  # only what the first run did not finish
    assert snapshot(out) == ref
    for name, stamp in stamps.items():  # nothing finished was rewritten
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, name


def test_a_worker_node_killed_mid_run(cluster, make_video, reference, tmp_path):
    """The node that does not hold the actor is killed while it runs video tasks: Ray retries the
    lost tasks on the other node, so every video ends in the cache, as the local engine writes it."""
    videos = _videos(make_video)
    ref = reference(videos)
    out = tmp_path / "cache"
    t, box = _in_thread(
        lambda: extract_videos(
            videos,
            out_dir=out,
            settings=ExtractionSettings(**SMALL),
            batch_size=BATCH,
            progress=False,
            executor=RayOptions(max_tasks=3),
        )
    )
    deadline = time.monotonic() + BOUND_S
    actor_node, _ = _actor_node(cluster, deadline)
    victim = next(n for n in cluster.worker_nodes if n is not actor_node)
    # its tasks are running: they hold their videos' locks (three tasks, one free CPU on the actor's node)
    _wait_for(lambda: len(list(out.rglob("*.lock"))) >= 3 if out.is_dir() else False, deadline, "video tasks")
    entries_before = len(list(out.glob("*.json")))
    cluster.remove_node(victim)
    report, _ = _join(t, box)
    finished = _check_cache(out, report, ref)
    print(f"entries before the kill: {entries_before}; after: {sorted(finished)}; counts {report.counts()}")
    _rerun_resumes(out, videos, report, ref)


def test_the_actor_node_killed_mid_run(cluster, make_video, reference, tmp_path):
    """The node holding the I3D actor is killed: the actor is restarted on the other node
    (``max_restarts=1``); the batches in flight to it fail their videos by name, later videos are
    computed; nothing hangs, and a rerun computes the failed ones."""
    videos = _videos(make_video)
    ref = reference(videos)
    out = tmp_path / "cache"
    t, box = _in_thread(
        lambda: extract_videos(
            videos,
            out_dir=out,
            settings=ExtractionSettings(**SMALL),
            batch_size=BATCH,
            progress=False,
            executor=RayOptions(max_tasks=2),
        )
    )
    deadline = time.monotonic() + BOUND_S
    actor_node, _ = _actor_node(cluster, deadline)
    _wait_for(lambda: len(list(out.rglob("*.lock"))) >= 2 if out.is_dir() else False, deadline, "video tasks")
    cluster.remove_node(actor_node)
    report, _ = _join(t, box)
    finished = _check_cache(out, report, ref)
    failed = [r for r in report.results if r.status == "failed"]
    print(f"counts {report.counts()}; failed: {[r.error for r in failed]}")
    assert len(finished) >= 1  # the restarted actor served the videos after the kill
    _rerun_resumes(out, videos, report, ref)


def test_a_stalled_actor_is_bounded_by_the_timeout(cluster, make_video, tmp_path):
    """The I3D actor's process is stopped (SIGSTOP: alive to Ray, answering nothing): without a
    bound the run would wait for ever; with ``RayOptions.task_timeout_s`` each video fails by name."""
    videos = _videos(make_video)[:3]
    out = tmp_path / "cache"
    timeout = 20.0
    t, box = _in_thread(
        lambda: extract_videos(
            videos,
            out_dir=out,
            settings=ExtractionSettings(**SMALL),
            batch_size=BATCH,
            progress=False,
            executor=RayOptions(max_tasks=2, task_timeout_s=timeout),
        )
    )
    deadline = time.monotonic() + BOUND_S
    _, pid = _actor_node(cluster, deadline)
    # stop it once it has loaded the network: a task waits on it (its lock is held)
    _wait_for(lambda: len(list(out.rglob("*.lock"))) >= 1 if out.is_dir() else False, deadline, "video tasks")
    os.kill(pid, signal.SIGSTOP)
    try:
        report, took = _join(t, box, bound=BOUND_S)
    except ConfigError as exc:  # stopped while it still loaded the network: the run stops, saying so
        assert f"the I3D actor did not start on the cluster within {timeout:g} s" in str(exc)
        return
    finally:
        _signal(pid, signal.SIGCONT)
    failed = [r for r in report.results if r.status == "failed"]
    assert failed, report.counts()
    for r in failed:
        assert r.error.startswith(r.source) and f"within {timeout:g} s" in r.error, r.error
    assert not list(out.glob(".*.tmp"))
    records = {p.stem for p in out.glob("*.json")}
    assert records == {r.stem for r in report.results if r.status == "ok"}
