"""The Docker image, run as a user would: version, offline extraction by a non-root user from a
read-only video (same features as the host), detect with a run trained on the host, exit codes,
and a two-container Ray cluster on the host network (the same cache as the host's local engine).

Runs under ``make docker-test`` (docker/test.sh builds the image and sets $VADPIPE_DOCKER_IMAGE);
skipped otherwise. Every container runs with ``--network none --read-only``: the weights must be
in the image, and nothing is written outside the mounted output folder and a /tmp tmpfs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, moving_frames, write_video

from vadpipe.postprocess.intervals import validate_document
from vadpipe.synth import SplitSize, SynthConfig, make_dataset

IMAGE = os.environ.get("VADPIPE_DOCKER_IMAGE", "")
DOCKER = os.environ.get("DOCKER", "docker")
# containers carry this label so docker/test.sh can remove any left behind by a killed run
LABEL = os.environ.get("VADPIPE_DOCKER_LABEL", "vadpipe-test")
BIKES = SHARED / "media" / "bikes.mp4"
# the image's user (uid 1000) when the host runs as root, else the caller's own ids: never root
USER = (1000, 1000) if os.getuid() == 0 else (os.getuid(), os.getgid())
# Host and container run the same torch build on the same CPU: measured byte-identical (the test
# prints the difference); the tolerance leaves room for other wheel versions of the decoder.
FEATURE_ATOL = 1e-4

pytestmark = pytest.mark.skipif(
    not IMAGE, reason="no image to test: `make docker-test` builds one and sets $VADPIPE_DOCKER_IMAGE"
)


def docker_run(*args: str, mounts: tuple[tuple[Path, str, str], ...] = ()) -> subprocess.CompletedProcess:
    """``docker run`` the image's entrypoint offline, read-only, as the non-root user."""
    cmd = [
        DOCKER,
        "run",
        "--rm",
        "--label",
        LABEL,
        "--name",
        f"{LABEL}-{uuid.uuid4().hex[:8]}",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        f"{USER[0]}:{USER[1]}",
    ]
    for host, inside, mode in mounts:
        cmd += ["-v", f"{host}:{inside}:{mode}"]
    return subprocess.run([*cmd, IMAGE, *args], capture_output=True, text=True, timeout=1200)


def host_run(*args: str) -> subprocess.CompletedProcess:
    """The same command with the host's vadpipe (the venv running these tests)."""
    return subprocess.run([sys.executable, "-m", "vadpipe", *args], capture_output=True, text=True, timeout=1200)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def writable(path: Path) -> Path:
    """A folder the container's user may write into."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(path, *USER)
    return path


def features(cache: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(cache.glob("*.npy"))}


def test_version_is_the_hosts():
    out = ok(docker_run("--version")).stdout.strip()
    assert out == ok(host_run("--version")).stdout.strip()
    assert out.startswith("vadpipe")


@pytest.mark.skipif(not BIKES.is_file(), reason=f"sample video not found at {BIKES} (the ../shared folder)")
def test_extract_offline_as_non_root_matches_the_host(tmp_path):
    out = writable(tmp_path / "out")
    ok(
        docker_run(
            "extract",
            "/videos/bikes.mp4",
            "--features",
            "/out/features",
            "--json",
            "/out/report.json",
            "-q",
            mounts=((BIKES, "/videos/bikes.mp4", "ro"), (out, "/out", "rw")),
        )
    )
    ok(host_run("extract", str(BIKES), "--features", str(tmp_path / "host"), "-q"))
    mine, theirs = features(out / "features"), features(tmp_path / "host")
    assert list(mine) == ["bikes.times.npy", "bikes__0.npy"] and list(theirs) == list(mine)
    a, b = mine["bikes__0.npy"], theirs["bikes__0.npy"]
    assert a.shape == b.shape == (250 // 16, 1024) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=FEATURE_ATOL)
    np.testing.assert_array_equal(mine["bikes.times.npy"], theirs["bikes.times.npy"])
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"ok": 1} and report["clips_computed"] == 250 // 16
    # written by the non-root user: the files on the host belong to its uid
    owners = {p.stat().st_uid for p in (out / "features").iterdir()}
    assert owners == {USER[0]} and USER[0] != 0
    side = json.loads((out / "features" / "bikes.json").read_text())
    host_side = json.loads((tmp_path / "host" / "bikes.json").read_text())
    assert side["extractor"] == host_side["extractor"]  # same weights id, clip geometry, crops, version
    assert side["source"]["sha256"] == host_side["source"]["sha256"]
    identical = side["features"] == host_side["features"]  # the records hold each file's sha256
    print(
        f"\ndocker-test: bikes.mp4 features, container vs host: max |diff| {np.abs(a - b).max():.3g}, "
        f"byte-identical: {identical}"
    )


@pytest.fixture(scope="module")
def host_run_folder(tmp_path_factory):
    """A tiny CSL-TAL run trained on the host from generated videos (real I3D features)."""
    root = tmp_path_factory.mktemp("docker-train")
    ds = make_dataset(
        root / "videos",
        splits={"train": SplitSize(2, 2), "test": SplitSize(1, 1)},
        config=SynthConfig(n_frames=(64, 80)),
        seed=5,
    )
    ok(host_run("extract", str(ds.split_dir("train")), "--features", str(root / "features"), "-q"))
    run = root / "run"
    ok(
        host_run(
            "train",
            "--features",
            str(root / "features"),
            "--run",
            str(run),
            "--recipe",
            "paper",
            "--epochs",
            "5",
            "--seed",
            "0",
            "-q",
        )
    )
    return ds, run, root


def test_detect_with_a_run_trained_on_the_host(host_run_folder, tmp_path):
    ds, run, root = host_run_folder
    out = writable(tmp_path / "out")
    ok(
        docker_run(
            "detect",
            "/videos",
            "--run",
            "/model",
            "--features",
            "/out/cache",
            "--json",
            "/out/intervals.json",
            "-q",
            mounts=((ds.split_dir("test"), "/videos", "ro"), (run, "/model", "ro"), (out, "/out", "rw")),
        )
    )
    doc = json.loads((out / "intervals.json").read_text())
    validate_document(doc)
    ok(
        host_run(
            "detect",
            str(ds.split_dir("test")),
            "--run",
            str(run),
            "--features",
            str(tmp_path / "hcache"),
            "--json",
            str(tmp_path / "host.json"),
            "-q",
        )
    )
    host_doc = json.loads((tmp_path / "host.json").read_text())
    name = lambda v: v["source"].rsplit("/", 1)[-1]  # noqa: E731
    theirs = {name(v): v for v in host_doc["videos"]}
    assert sorted(map(name, doc["videos"])) == sorted(theirs) and len(theirs) == 2
    for video in doc["videos"]:
        other = theirs[name(video)]
        assert video["n_frames"] == other["n_frames"] and len(video["clips"]) == len(other["clips"]) > 0
        np.testing.assert_allclose(
            [c["wtcam"] for c in video["clips"]], [c["wtcam"] for c in other["clips"]], rtol=0, atol=1e-4
        )


def test_bad_input_exit_codes(tmp_path):
    bad = tmp_path / "in" / "notes.mp4"
    bad.parent.mkdir()
    bad.write_text("this is not a video\n")
    out = writable(tmp_path / "out")
    mounts = ((bad.parent, "/videos", "ro"), (out, "/out", "rw"))
    # every video failed: 1, with one line naming the file
    proc = docker_run("extract", "/videos/notes.mp4", "--features", "/out/features", "-q", mounts=mounts)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "notes.mp4" in proc.stderr and "Traceback" not in proc.stderr
    # a model folder that is not there: 2 (bad options)
    proc = docker_run("detect", "/videos/notes.mp4", "--run", "/nowhere", "-q", mounts=mounts)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "/nowhere" in proc.stderr and "Traceback" not in proc.stderr
    # an unknown subcommand: 2 (click's usage error)
    assert docker_run("frobnicate").returncode == 2


def machine_address() -> str:
    """The address Ray gives this machine: that of its default route (Ray turns a loopback
    ``--address`` into it before connecting, so a cluster bound to 127.0.0.1 cannot be joined
    while the machine has another address); 127.0.0.1 on a machine without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))  # as Ray does: no packet is sent, this only picks the route
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_node(name: str, ip: str, args: list[str], mounts: list[Path]) -> list[str]:
    """``docker run -d`` of one Ray node from the image (``ray start --block``) on the host network;
    every other port Ray opens is free and its own, so two nodes share the host's ports."""
    agent, grpc, env_agent, metrics = free_ports(4)
    cmd = [
        DOCKER,
        "run",
        "-d",
        "--label",
        LABEL,
        "--name",
        name,
        "--network",
        "host",
        "--shm-size",
        "512m",
        "--user",
        f"{USER[0]}:{USER[1]}",
        "-e",
        "RAY_AUTH_MODE=disabled",
        "--entrypoint",
        "ray",
    ]
    for path in mounts:  # the "shared file system": the same path on every node
        cmd += ["-v", f"{path}:{path}"]
    return [
        *cmd,
        IMAGE,
        "start",
        "--block",
        "--node-ip-address",
        ip,
        "--disable-usage-stats",
        "--object-store-memory",
        str(200 * 2**20),
        "--min-worker-port",
        "0",
        "--max-worker-port",
        "0",
        "--dashboard-agent-listen-port",
        str(agent),
        "--dashboard-agent-grpc-port",
        str(grpc),
        "--runtime-env-agent-port",
        str(env_agent),
        "--metrics-export-port",
        str(metrics),
        *args,
    ]


def test_a_two_container_ray_cluster_gives_the_local_engines_cache(tmp_path):
    """A head container (no CPUs: it schedules nothing) and a worker container of 2 CPUs, both from
    the image on the host network; ``vadpipe extract --engine ray`` run in the head container puts
    every task and the I3D actor in the worker container, and writes the host's cache, byte for byte."""
    t0 = time.monotonic()
    videos = tmp_path / "videos"
    for i in range(4):
        write_video(videos / f"v{i}.mp4", moving_frames(32, 96, 64, seed=20 + i))
    out = writable(tmp_path / "out")
    ip = machine_address()
    (port,) = free_ports(1)
    tag = uuid.uuid4().hex[:8]
    head, worker = f"{LABEL}-ray-head-{tag}", f"{LABEL}-ray-worker-{tag}"
    try:
        ok(
            subprocess.run(
                ray_node(
                    head,
                    ip,
                    ["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false"],
                    [videos, out],
                ),
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
        ok(
            subprocess.run(
                ray_node(worker, ip, ["--address", f"{ip}:{port}", "--num-cpus", "2"], [videos, out]),
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
        proc = subprocess.run(
            [
                DOCKER,
                "exec",
                head,
                "vadpipe",
                "extract",
                str(videos),
                "--features",
                str(out / "cache"),
                "--engine",
                "ray",
                "--address",
                f"{ip}:{port}",
                "--json",
                str(out / "report.json"),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            logs = [
                subprocess.run([DOCKER, "logs", "--tail", "20", c], capture_output=True, text=True)
                for c in (head, worker)
            ]
            raise AssertionError((proc.returncode, proc.stderr[-3000:], [lg.stdout + lg.stderr for lg in logs]))
    finally:
        subprocess.run([DOCKER, "rm", "-f", head, worker], capture_output=True, timeout=120)
    took = time.monotonic() - t0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"ok": 4} and report["clips_computed"] == 8, report["counts"]
    ok(host_run("extract", str(videos), "--features", str(tmp_path / "host"), "-q"))
    mine, theirs = snapshot(out / "cache"), snapshot(tmp_path / "host")
    assert sorted(mine) == sorted(theirs) and len(mine) == 4 * 3
    same = sorted(n for n in mine if mine[n] == theirs[n])
    print(
        f"\ndocker-test: two-container Ray cluster at {ip}:{port}: {len(same)}/{len(mine)} cache files "
        f"byte-identical to the host's local engine; cluster run {took:.0f} s"
    )
    assert same == sorted(mine), sorted(set(mine) - set(same))


def snapshot(out: Path) -> dict[str, bytes]:
    """Every cache file (features, frame times, records), by name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(out.iterdir())
        if p.is_file() and p.suffix in (".npy", ".json") and not p.name.startswith(".")
    }
