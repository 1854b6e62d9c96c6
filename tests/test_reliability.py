"""Interruption and concurrency: a killed or parallel extraction never corrupts the cache."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import moving_frames, sigint_as_in_a_terminal, write_video

pytestmark = pytest.mark.slow  # vadpipe extract subprocesses with the real I3D


def _videos(folder: Path, n: int = 4, frames: int = 32) -> Path:
    for i in range(n):
        write_video(folder / f"clip{i}.mp4", moving_frames(frames, 96, 64, seed=i))
    return folder


def _cmd(inputs: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vadpipe",
        "extract",
        str(inputs),
        "--features",
        str(out),
        "--device",
        "cpu",
        "--json",
        str(out.parent / f"{out.name}-{time.monotonic_ns()}.json"),
        "-q",
    ]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(out.iterdir())
        if p.is_file() and p.suffix in (".npy", ".json") and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return _videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "cache"
    subprocess.run(_cmd(inputs, out), check=True, capture_output=True, timeout=600)
    return _snapshot(out)


def _wait_for(path_glob, out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t = time.monotonic()
    while not list(out.glob(path_glob)):
        if proc.poll() is not None:
            raise AssertionError(f"extract ended early: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() - t > timeout:
            raise AssertionError("timed out waiting for the first cache entry")
        time.sleep(0.05)


def test_sigkill_then_resume_gives_a_byte_identical_cache(inputs, reference, tmp_path):
    out = tmp_path / "cache"
    proc = subprocess.Popen(_cmd(inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for("clip0.json", out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(out.glob("clip*.json"))) < 4, "the run finished before it could be killed"
    resumed = subprocess.run(_cmd(inputs, out), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped" in resumed.stderr  # the finished video was not computed again
    assert _snapshot(out) == reference
    assert not list(out.glob(".*.tmp"))


def test_sigint_stops_cleanly_with_a_summary(inputs, tmp_path):
    out = tmp_path / "cache"
    proc = subprocess.Popen(
        _cmd(inputs, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    _wait_for("clip0.json", out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGINT arrived")
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(out.glob(".*.tmp"))


def test_two_processes_on_one_cache_split_the_work(inputs, reference, tmp_path):
    out = tmp_path / "cache"
    procs = [
        subprocess.Popen(_cmd(inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("cache-*.json")]
    computed = sum(r["counts"].get("ok", 0) for r in reports)
    assert computed == 4  # every video computed exactly once across the two processes
    assert _snapshot(out) == reference
