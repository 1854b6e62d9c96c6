"""The driver's side of the Ray engine: ``vadpipe extract --engine ray --address ...`` run as a
subprocess against a real multi-node cluster on this machine (``ray.cluster_utils.Cluster``: a
head and two worker nodes, each with its own raylet and object store), interrupted
(SIGINT), killed (SIGKILL), run twice at once on one cache (two users on one cluster), and
pointed at an address where no cluster answers.

The videos are extracted at the CLI's full 224 px geometry (the command has no smaller one), so
they are few and short. Every test checks the cache against the local engine's, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import moving_frames, sigint_as_in_a_terminal, write_video  # noqa: E402
from filelock import FileLock, Timeout  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from test_ray_cluster import _descendants  # noqa: E402
from test_workers import snapshot  # noqa: E402

from vadpipe.extract.claims import LOCK_DIR  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster, driver processes and the real I3D

N_VIDEOS = 8
BOUND_S = 300  # one driver run on the loaded 2-core machine (about 30-60 s when idle)
RAY_TASK = ("ray::_run_video", "ray::I3DBatchEncoder")  # the process titles of the engine's work


@pytest.fixture(scope="module")
def ray_env():
    """The environment of the cluster and its drivers: no auth token, Ray's files in a short temp
    dir of their own (socket paths must stay under 108 characters, and no other Ray run on this
    machine may see this cluster as its ``auto`` one)."""
    root = Path(tempfile.mkdtemp(prefix="vprd-", dir="/tmp"))
    (root / "ray").mkdir()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_AUTH_MODE", "disabled")
            mp.setenv("RAY_TMPDIR", str(root))
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(ray_env):
    """A head without CPUs (it schedules nothing) and two worker nodes of 2 CPUs, on this machine's
    address (a driver cannot join a cluster bound to 127.0.0.1: Ray turns a loopback ``--address``
    into the machine's own address before connecting); shut down (every raylet and worker process) whatever the tests did."""
    c = Cluster(
        initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False, temp_dir=str(ray_env / "ray"))
    )
    try:
        for _ in range(2):
            c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Eight 2-clip videos (one batch each), different content."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(N_VIDEOS):
        write_video(root / f"v{i}.mp4", moving_frames(32, 96, 64, seed=10 + i))
    return root


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> dict[str, bytes]:
    """The local engine's cache of the videos, made by the same command without ``--engine ray``."""
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(extract_cmd(videos, out, None), capture_output=True, text=True, timeout=BOUND_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return snapshot(out)


def extract_cmd(videos: Path, out: Path, address: str | None, report: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "vadpipe", "extract", str(videos), "--features", str(out), "-q"]
    if address:
        cmd += ["--engine", "ray", "--address", address]
    if report:
        cmd += ["--json", str(report)]
    return cmd


_DRIVERS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_driver_left():
    """A test that fails leaves no driver running."""
    yield
    while _DRIVERS:
        proc = _DRIVERS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_driver(videos: Path, out: Path, address: str, report: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        extract_cmd(videos, out, address, report),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    _DRIVERS.append(proc)
    return proc


def finish(proc: subprocess.Popen, log: Path, bound: float = BOUND_S) -> tuple[int, str]:
    try:
        rc = proc.wait(bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the driver did not end within {bound} s: {log.read_text()[-3000:]}") from None
    return rc, log.read_text()


def wait_for(cond, bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def records(out: Path) -> set[str]:
    return {p.stem for p in out.glob("*.json")} if out.is_dir() else set()


def held_locks(out: Path) -> list[str]:
    """The entry locks some process holds (a lock file alone is no claim: fcntl locks die with
    their process)."""
    held = []
    for path in sorted((out / LOCK_DIR).glob("*.lock")):
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            held.append(path.stem)
        else:
            lock.release()
    return held


def cluster_work(c: Cluster) -> list[str]:
    """The engine's tasks and actors still running on the cluster's worker nodes."""
    found = []
    for node in c.worker_nodes:
        for pid in _descendants(node.all_processes["raylet"][0].process.pid):
            cmd = _cmdline(pid)
            if cmd.startswith(RAY_TASK):
                found.append(f"{pid}: {cmd[:60]}")
    return found


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it holds no file, so no lock)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def check_cache(out: Path, ref: dict[str, bytes]) -> set[str]:
    """Every entry in the cache complete and byte-identical to the local engine's, or absent (no
    feature file without its record, no temp file); returns the finished stems."""
    snap = snapshot(out)
    done = {n.removesuffix(".json") for n in snap if n.endswith(".json")}
    for name, data in snap.items():
        assert name in ref and data == ref[name], name
        stem = name.split("__")[0].removesuffix(".times.npy").removesuffix(".json")
        assert stem in done, f"{name} without its record"
    for stem in done:
        assert all(snap.get(n) == ref[n] for n in ref if n.split("__")[0].split(".")[0] == stem), stem
    assert not list(out.glob(".*.tmp")), list(out.glob(".*.tmp"))
    return done


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if p.suffix in (".npy", ".json")}


def rerun_resumes(videos: Path, out: Path, address: str, ref: dict[str, bytes], done: set[str], tmp_path: Path) -> dict:
    """The same command again: the finished videos skipped (not rewritten), the rest computed."""
    before = stamps(out)
    report_path = tmp_path / "rerun.json"
    rc, err = finish(start_driver(videos, out, address, report_path, tmp_path / "rerun.log"), tmp_path / "rerun.log")
    assert rc == 0, err[-3000:]
    report = json.loads(report_path.read_text())
    status = {r["stem"]: r["status"] for r in report["results"]}
    assert status == {f"v{i}": "skipped" if f"v{i}" in done else "ok" for i in range(N_VIDEOS)}, status
    assert snapshot(out) == ref
    assert {n: s for n, s in stamps(out).items() if n in before} == before  # nothing finished rewritten
    assert held_locks(out) == []
    return report


def test_sigint_stops_the_run_cleanly_and_the_rerun_resumes(cluster, videos, reference, tmp_path):
    out = tmp_path / "cache"
    log = tmp_path / "driver.log"
    t0 = time.monotonic()
    proc = start_driver(videos, out, cluster.address, tmp_path / "report.json", log)
    wait_for(lambda: len(records(out)) >= 1 or proc.poll() is not None, BOUND_S, "a first finished video")
    os.kill(proc.pid, signal.SIGINT)
    t_sig = time.monotonic()
    rc, err = finish(proc, log, bound=60)
    took_exit = time.monotonic() - t_sig
    assert rc == 130, err[-3000:]
    assert "interrupted: finished videos are cached; run the same command again to resume" in err
    assert "Traceback" not in err, err[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["interrupted"] is True
    # the driver cancelled its tasks and waited for them: no claim is held when it has exited,
    # and none of its tasks runs on
    assert held_locks(out) == []
    wait_for(lambda: not cluster_work(cluster), 60, f"the run's tasks to stop: {cluster_work(cluster)}")
    done = check_cache(out, reference)
    ok = {r["stem"] for r in report["results"] if r["status"] == "ok"}
    # a task may finish its entry after the driver stopped collecting results: that video is in the
    # cache, complete, without an "ok" in the interrupted report, and the rerun skips it
    assert ok <= done and 1 <= len(done) < N_VIDEOS, (ok, done)
    print(f"\nSIGINT: exit {rc} after {took_exit:.1f} s, {len(done)}/{N_VIDEOS} finished: {sorted(done)}")
    rerun_resumes(videos, out, cluster.address, reference, done, tmp_path)
    print(f"SIGINT test {time.monotonic() - t0:.0f} s")


def test_sigkill_leaves_the_cache_whole_and_the_rerun_resumes(cluster, videos, reference, tmp_path):
    out = tmp_path / "cache"
    log = tmp_path / "driver.log"
    t0 = time.monotonic()
    proc = start_driver(videos, out, cluster.address, tmp_path / "report.json", log)
    wait_for(lambda: len(records(out)) >= 1 or proc.poll() is not None, BOUND_S, "a first finished video")
    workers = [int(w.split(":")[0]) for w in cluster_work(cluster)]
    assert workers, "no task running when the driver is killed"
    proc.kill()
    proc.wait()
    t_kill = time.monotonic()
    # Ray ends the dead driver's job: the worker processes of its tasks and its actor are killed
    # (not left to finish, nor kept for other jobs), and their claims die with them
    wait_for(
        lambda: all(_gone(pid) for pid in workers),
        60,
        f"the dead driver's workers to exit: {[p for p in workers if not _gone(p)]}",
    )
    took_stop = time.monotonic() - t_kill
    wait_for(lambda: not held_locks(out), 30, "the dead driver's claims to be released")
    assert not cluster_work(cluster)
    snap = snapshot(out)
    done = {n.removesuffix(".json") for n in snap if n.endswith(".json")}
    orphans = sorted(n for n in snap if n.split("__")[0].split(".")[0] not in done)
    for name, data in snap.items():  # what is there is the local engine's
        assert data == reference[name], name
    assert 1 <= len(done) < N_VIDEOS, done
    print(
        f"\nSIGKILL: {len(workers)} task/actor processes gone {took_stop:.1f} s after the kill, {len(done)}/{N_VIDEOS} finished "
        f"{sorted(done)}, feature files without a record: {orphans}, temp files: "
        f"{sorted(p.name for p in out.glob('.*.tmp'))}"
    )
    rerun_resumes(videos, out, cluster.address, reference, done, tmp_path)
    assert not list(out.glob(".*.tmp"))
    print(f"SIGKILL test {time.monotonic() - t0:.0f} s")


def test_two_drivers_on_one_cache_compute_each_video_once(cluster, videos, reference, tmp_path):
    out = tmp_path / "cache"
    t0 = time.monotonic()
    procs = [
        start_driver(videos, out, cluster.address, tmp_path / f"report{k}.json", tmp_path / f"driver{k}.log")
        for k in range(2)
    ]
    reports = []
    for k, proc in enumerate(procs):
        rc, err = finish(proc, tmp_path / f"driver{k}.log")
        assert rc == 0, err[-3000:]
        reports.append(json.loads((tmp_path / f"report{k}.json").read_text()))
    computed = [{r["stem"] for r in rep["results"] if r["status"] == "ok"} for rep in reports]
    for rep, _mine, theirs in zip(reports, computed, computed[::-1]):
        assert rep["counts"].get("failed", 0) == 0, rep["results"]
        # what one driver did not compute, the other did, and this one skipped it
        assert {r["stem"] for r in rep["results"] if r["status"] == "skipped"} == theirs
    assert not computed[0] & computed[1], computed  # no video twice
    assert computed[0] | computed[1] == {f"v{i}" for i in range(N_VIDEOS)}
    assert snapshot(out) == reference
    assert held_locks(out) == [] and not list(out.glob(".*.tmp"))
    print(f"\ntwo drivers: computed {sorted(computed[0])} / {sorted(computed[1])}; {time.monotonic() - t0:.0f} s")


def _machine_address() -> str:
    """The address of this machine's default route, as Ray picks it; 127.0.0.1 without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))  # no packet is sent: this only picks the route
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_an_unreachable_cluster_address_fails_at_once(videos, tmp_path):
    """``ray.init`` retries an unreachable cluster for minutes; the driver checks the address first
    and exits with status 2 naming it: nothing listening, and a cluster bound to 127.0.0.1 (a
    listener stands in for its GCS), which Ray dials at the machine's own address."""
    ip = _machine_address()
    if ip == "127.0.0.1":
        pytest.skip("this machine has no address but loopback: Ray dials 127.0.0.1 itself")
    with socket.socket() as closed, socket.socket() as loopback_gcs:
        closed.bind((ip, 0))  # a port nothing listens on
        loopback_gcs.bind(("127.0.0.1", 0))
        loopback_gcs.listen()
        cases = {
            f"{ip}:{closed.getsockname()[1]}": "",
            f"127.0.0.1:{loopback_gcs.getsockname()[1]}": "start the cluster on this machine's address",
        }
        for address, hint in cases.items():
            t0 = time.monotonic()
            proc = subprocess.run(
                extract_cmd(videos, tmp_path / "cache", address), capture_output=True, text=True, timeout=120
            )
            assert proc.returncode == 2, proc.stderr[-3000:]
            assert f"error: cannot reach the Ray cluster at {address}: " in proc.stderr and hint in proc.stderr
            assert "Traceback" not in proc.stderr
            print(f"\n{address}: exit 2 after {time.monotonic() - t0:.1f} s: {proc.stderr.strip().splitlines()[-1]}")
