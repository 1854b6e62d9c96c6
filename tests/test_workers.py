"""Decode processes (--decode-procs) and one process per device (--devices): the cache they write
is the thread executor's, byte for byte, with the real I3D on small generated videos."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import moving_frames, write_video

from vadpipe.cli import main
from vadpipe.errors import ConfigError
from vadpipe.executor_choice import choose_executor
from vadpipe.extract import cache
from vadpipe.extract.devices import parse_devices, shard_videos
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.options import DecodeProcessOptions, DeviceOptions, RayOptions, ThreadOptions
from vadpipe.extract.settings import ExtractionSettings

# the real network on 48 px crops: the same code paths as 224, a fraction of the CPU time
SMALL = dict(resize_short=48, crop_size=48)
BATCH = 2  # crops per forward pass: several batches per video, and a short last one


def make_videos(root: Path) -> Path:
    """Two same-stem videos in different folders, a copy of one, a 3-clip video, a too-short one
    and a broken file: 6 clips to compute, every kind of result."""
    write_video(root / "a" / "cam.mp4", moving_frames(40, 96, 64, seed=1))  # 2 clips
    write_video(root / "b" / "cam.mp4", moving_frames(16, 96, 64, seed=2))  # 1 clip, named cam-<sha8>
    write_video(root / "b" / "long.mp4", moving_frames(50, 80, 64, seed=3))  # 3 clips: batches of 2 + 1
    write_video(root / "b" / "short.mp4", moving_frames(10, 96, 64, seed=4))  # zero clips
    (root / "b" / "garbage.mp4").write_bytes(b"not a video at all" * 64)
    (root / "c").mkdir()
    (root / "c" / "cam.mp4").write_bytes((root / "a" / "cam.mp4").read_bytes())  # same content as a/cam
    return root


def snapshot(out: Path) -> dict[str, bytes]:
    """Every cache file (features, frame times, records), by name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(out.iterdir())
        if p.is_file() and p.suffix in (".npy", ".json") and not p.name.startswith(".")
    }


def summary(report) -> list[tuple]:
    return [(r.source, r.status, r.stem, r.clips, r.error, r.note) for r in report.results]


def failures(out: Path) -> list[tuple[str, str]]:
    lines = [json.loads(line) for line in (out / cache.FAILURES_FILE).read_text().splitlines()]
    return sorted((Path(f["source"]).name, f["error"]) for f in lines)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def settings(i3d_cpu) -> ExtractionSettings:
    return ExtractionSettings(**SMALL).with_weights(i3d_cpu[1])


@pytest.fixture(scope="module")
def reference(videos, settings, i3d_cpu, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    report = extract_videos(
        [videos], out_dir=out, settings=settings, encoder=i3d_cpu[0], batch_size=BATCH, progress=False
    )
    assert report.counts() == {"ok": 3, "skipped": 1, "zero_clips": 1, "failed": 1}
    return out, report


@pytest.mark.slow
def test_workers_write_the_single_process_cache_byte_for_byte(videos, settings, reference, i3d_cpu, tmp_path):
    ref_out, ref_report = reference
    out = tmp_path / "cache"
    seen = []
    report = extract_videos(
        [videos],
        out_dir=out,
        settings=ExtractionSettings(**SMALL),
        executor=DecodeProcessOptions(device="cpu", processes=2),
        batch_size=BATCH,
        progress=False,
        on_result=seen.append,
    )
    assert snapshot(out) == snapshot(ref_out)
    assert summary(report) == summary(ref_report)  # same results, same order, same messages
    assert sorted(r.source for r in seen) == sorted(r.source for r in report.results)
    assert failures(out) == failures(ref_out)  # the broken file, reported the same way
    assert report.clips_computed == 6 and report.network_s > 0
    assert 0 <= report.input_wait_s <= report.loop_s <= report.seconds
    again = extract_videos(
        [videos],
        out_dir=out,
        settings=settings,
        encoder=i3d_cpu[0],
        batch_size=BATCH,
        executor=DecodeProcessOptions(processes=2),
        progress=False,
    )
    assert again.counts() == {"skipped": 5, "failed": 1} and again.clips_computed == 0
    assert snapshot(out) == snapshot(ref_out)


def _open_by(pid: int, name: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # the process or one of its descriptors is gone
        return False


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_video_and_a_rerun_completes(settings, i3d_cpu, tmp_path):
    src = tmp_path / "in"
    write_video(src / "big.mp4", moving_frames(64, 96, 64, seed=5))  # 4 clips: its worker waits for free slots
    write_video(src / "s1.mp4", moving_frames(16, 96, 64, seed=6))
    write_video(src / "s2.mp4", moving_frames(16, 96, 64, seed=7))
    killed: list[int] = []

    def kill_the_worker_decoding_big() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for child in multiprocessing.active_children():
                if child.name.startswith("vadpipe-decode") and _open_by(child.pid, "big.mp4"):
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_worker_decoding_big, daemon=True)
    killer.start()
    out = tmp_path / "cache"
    report = extract_videos(
        [src],
        out_dir=out,
        settings=settings,
        encoder=i3d_cpu[0],
        batch_size=BATCH,
        executor=DecodeProcessOptions(processes=1),
        progress=False,
    )  # the one worker dies: a new one does s1 and s2
    killer.join(timeout=5)
    assert killed, "no worker was seen decoding big.mp4"
    status = {Path(r.source).name: r for r in report.results}
    assert [r.status for r in status.values()] == ["failed", "ok", "ok"]
    assert status["big.mp4"].error == f"{src / 'big.mp4'}: the decoding process died (killed by SIGKILL)"
    assert failures(out) == [("big.mp4", status["big.mp4"].error)]
    assert not (out / "big.json").exists() and not list(out.glob(".*.tmp"))
    rerun = extract_videos(
        [src], out_dir=out, settings=settings, encoder=i3d_cpu[0], batch_size=BATCH, progress=False
    )  # any executor resumes the same cache
    assert [(Path(r.source).name, r.status, r.clips) for r in rerun.results] == [
        ("big.mp4", "ok", 4),
        ("s1.mp4", "skipped", 1),
        ("s2.mp4", "skipped", 1),
    ]


@pytest.mark.slow
def test_devices_cpu_cpu_shard_the_videos_into_the_same_cache(videos, reference, i3d_cpu, tmp_path):
    ref_out, ref_report = reference
    out = tmp_path / "cache"
    report = extract_videos(
        [videos],
        out_dir=out,
        settings=ExtractionSettings(**SMALL),
        batch_size=BATCH,
        executor=DeviceOptions(("cpu", "cpu"), decode_processes=0),
        progress=False,
    )
    assert snapshot(out) == snapshot(ref_out)
    assert summary(report) == summary(ref_report)
    assert failures(out) == failures(ref_out)
    assert report.counts()["ok"] == 3  # every video computed once over the two processes


def test_shard_videos_keeps_a_stem_in_one_shard_and_balances_bytes(tmp_path):
    sizes = {"a/cam.mp4": 500, "b/cam.mp4": 400, "b/x.mp4": 800, "b/y.mp4": 300, "c/z.mp4": 100, "c/w.mp4": 0}
    paths = []
    for name, size in sizes.items():
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"\0" * size)
        paths.append(p)
    shards = shard_videos(paths, 2)
    names = [[p.relative_to(tmp_path).as_posix() for p in shard] for shard in shards]
    # cam (900 bytes) -> 0, x (800) -> 1, y (300) -> 1, z (100) -> 0, w (0 bytes) -> 0; input order kept
    assert names == [["a/cam.mp4", "b/cam.mp4", "c/z.mp4", "c/w.mp4"], ["b/x.mp4", "b/y.mp4"]]
    assert sorted(sum(shards, [])) == sorted(paths) and shard_videos(paths, 2) == shards
    assert [len(s) for s in shard_videos(paths[:1], 3)] == [1, 0, 0]


def test_device_lists_are_validated():
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    for bad, match in [
        ("", "comma-separated"),
        ("cpu,,cpu", "comma-separated"),
        ("tpu", "unknown device"),
        ("meta", "only cpu and cuda"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_devices(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device cuda:0 requested but this machine has 0 CUDA"):
            parse_devices("0")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(engine="spark"), "engine must be one of local, ray"),
        (dict(decode_processes=-1), "decode processes must be >= 0"),
        (dict(address="auto"), "--address is for the Ray engine"),
        (dict(ray_tasks=4), "--ray-tasks is for the Ray engine"),
        (dict(ray_task_timeout_s=60.0), "--ray-task-timeout is for the Ray engine"),
        (dict(devices="cpu,cpu", device="cpu"), "--device or --devices"),
        (dict(engine="ray", devices="0,1"), "--devices is for the local engine"),
        (dict(engine="ray", device="cuda:1"), "--device is for the local engine"),
        (dict(engine="ray", decode_processes=2), "--decode-procs is for the local engine"),
    ],
)
def test_conflicting_engine_options_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        choose_executor(**kwargs)


def test_executor_options_are_chosen_and_checked(tmp_path):
    assert choose_executor(device="cpu") == ThreadOptions(device="cpu")  # CPU: a decode thread
    assert choose_executor(device="cpu", decode_processes=3) == DecodeProcessOptions(device="cpu", processes=3)
    assert choose_executor(devices="cpu,cpu", decode_processes=0) == DeviceOptions(("cpu", "cpu"), 0)
    assert choose_executor(devices="cpu") == ThreadOptions(device="cpu")  # one device: no device processes
    assert choose_executor(engine="ray", ray_tasks=3) == RayOptions(max_tasks=3)
    assert choose_executor(engine="ray", ray_task_timeout_s=60.0) == RayOptions(task_timeout_s=60.0)
    for build, match in [
        (lambda: RayOptions(max_tasks=0), "Ray video tasks in flight must be >= 1, got 0"),
        (lambda: DecodeProcessOptions(processes=0), "decode processes must be >= 1, got 0"),
        (lambda: DeviceOptions(()), "at least one device"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build()
    with pytest.raises(ConfigError, match="URLs .* are not supported"):
        extract_videos([tmp_path], out_dir=Path("s3://bucket/features"), executor=RayOptions())
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        extract_videos([tmp_path], out_dir=tmp_path / "c", batch_size=0)
    with pytest.raises(ConfigError, match="a ready encoder runs in this process"):
        extract_videos([tmp_path], out_dir=tmp_path / "c", executor=RayOptions(), encoder=object())


def test_ray_engine_without_ray_says_how_to_install_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    video = write_video(tmp_path / "v.mp4", moving_frames(16, 96, 64))
    result = CliRunner().invoke(
        main, ["extract", str(video), "--features", str(tmp_path / "c"), "--engine", "ray", "-q"]
    )
    assert result.exit_code == 2
    assert "pip install 'vadpipe[ray]'" in result.stderr and "Traceback" not in result.stderr


def test_cli_has_the_engine_options_and_passes_them_on(tmp_path):
    help_text = CliRunner().invoke(main, ["extract", "--help"]).output
    for option in ("--decode-procs", "--ray-tasks", "--devices", "--engine", "--address"):
        assert option in help_text
    video = write_video(tmp_path / "one.mp4", moving_frames(16, 96, 64, seed=8))
    args = ["extract", str(video), "--features", str(tmp_path / "cache"), "-q"]
    bad = CliRunner().invoke(main, args + ["--engine", "ray", "--devices", "cpu,cpu"])
    assert bad.exit_code == 2 and "--devices is for the local engine" in bad.stderr
    bad = CliRunner().invoke(main, args + ["--address", "auto"])
    assert bad.exit_code == 2 and "add --engine ray" in bad.stderr
    bad = CliRunner().invoke(main, args + ["--decode-procs", "-1"])
    assert bad.exit_code == 2 and "--decode-procs" in bad.stderr
    bad = CliRunner().invoke(main, args + ["--ray-tasks", "2"])
    assert bad.exit_code == 2 and "--ray-tasks is for the Ray engine" in bad.stderr
    bad = CliRunner().invoke(main, args + ["--ray-task-timeout", "60"])
    assert bad.exit_code == 2 and "--ray-task-timeout is for the Ray engine" in bad.stderr
    bad = CliRunner().invoke(main, args + ["--engine", "ray", "--ray-task-timeout", "0"])
    assert bad.exit_code == 2 and "--ray-task-timeout" in bad.stderr


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_workers_on_cuda_feed_pinned_batches_and_match_the_cpu_features(videos, reference, tmp_path):
    import numpy as np

    ref_out, ref_report = reference
    out = tmp_path / "cache"
    report = extract_videos(
        [videos],
        out_dir=out,
        settings=ExtractionSettings(**SMALL),
        executor=DecodeProcessOptions(device="cuda", processes=2),
        batch_size=BATCH,
        progress=False,
    )
    assert [(r.source, r.status, r.clips) for r in report.results] == [
        (r.source, r.status, r.clips) for r in ref_report.results
    ]
    for name in sorted(p.name for p in ref_out.glob("*__0.npy")):
        a, b = np.load(ref_out / name), np.load(out / name)
        assert a.shape == b.shape
        if len(a):  # TF32 off: fp32 on the GPU agrees with the CPU to rounding
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
