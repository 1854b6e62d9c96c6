"""The extraction runner, the cache and the ``vadpipe extract`` CLI, on real videos and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from vadpipe.cli import main
from vadpipe.extract import cache
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.settings import ExtractionSettings

pytestmark = pytest.mark.slow  # the real I3D on real videos


def _run(inputs, out, i3d_cpu, **settings):
    encoder, ident = i3d_cpu
    s = ExtractionSettings(**settings).with_weights(ident)
    return extract_videos(inputs, out_dir=out, settings=s, encoder=encoder, progress=False)


@pytest.fixture(scope="module")
def bikes_cache(shared_dir, i3d_cpu, tmp_path_factory):
    out = tmp_path_factory.mktemp("bikes")
    report = _run([shared_dir / "media" / "bikes.mp4"], out, i3d_cpu)
    return out, report


def test_bikes_first_8_clips_match_the_original_network(bikes_cache, shared_dir):
    out, report = bikes_cache
    assert [r.status for r in report.results] == ["ok"]
    feats = np.load(out / "bikes__0.npy")
    assert feats.shape == (15, 1024) and feats.dtype == np.float32  # 250 frames -> 15 clips, tail dropped
    ref = np.load(shared_dir / "reference" / "i3d" / "bikes_feats.npy")
    ours = feats[:8]
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos


def test_bikes_record_describes_the_video_and_clips(bikes_cache, shared_dir):
    out, _ = bikes_cache
    rec = json.loads((out / "bikes.json").read_text())
    assert rec["schema_version"] == 1 and rec["status"] == "ok" and rec["error"] is None
    assert rec["video"]["n_frames"] == 250 and rec["video"]["fps"] == 25.0
    assert rec["video"]["duration_s"] == pytest.approx(10.0)
    assert (rec["video"]["width"], rec["video"]["height"]) == (640, 272)
    frames_ref = np.load(shared_dir / "reference" / "i3d" / "bikes_feats_frame_indices.npy")
    assert rec["clips"]["start_frames"][:8] == frames_ref[:, 0].tolist()
    assert rec["clips"]["start_s"][:3] == pytest.approx([0.0, 0.64, 1.28])
    assert rec["clips"]["end_s"][0] == pytest.approx(0.64)
    assert rec["features"][0]["sha256"] == cache.sha256_file(out / "bikes__0.npy")
    assert rec["source"]["sha256"] == cache.sha256_file(shared_dir / "media" / "bikes.mp4")
    assert rec["extractor"]["weights_sha256"].startswith("af5c50f0")
    assert rec["extractor"]["settings"]["crops"] == "center" and rec["crops"] == ["center"]
    times = np.load(out / rec["frame_times_file"])
    assert times.shape == (250,) and times[-1] == pytest.approx(9.96)


def test_fifty_frames_give_three_clips_with_start_frames_and_times(make_video, tmp_path, i3d_cpu):
    video = make_video("fifty.mp4", n_frames=50, fps=25)
    report = _run([video], tmp_path / "c", i3d_cpu)
    rec = json.loads((tmp_path / "c" / "fifty.json").read_text())
    assert report.results[0].clips == 3 and rec["clips"]["count"] == 3
    assert rec["clips"]["start_frames"] == [0, 16, 32]
    assert rec["clips"]["start_s"] == pytest.approx([0.0, 0.64, 1.28])
    assert np.load(tmp_path / "c" / "fifty__0.npy").shape == (3, 1024)


def test_five_crop_files_share_t_and_crop_zero_is_the_centre(make_video, tmp_path, i3d_cpu):
    video = make_video("v.mp4", n_frames=20, width=128, height=96)
    _run([video], tmp_path / "centre", i3d_cpu)
    _run([video], tmp_path / "five", i3d_cpu, crops="five")
    files = sorted(p.name for p in (tmp_path / "five").glob("v__*.npy"))
    assert files == [f"v__{c}.npy" for c in range(5)]
    feats = [np.load(tmp_path / "five" / f) for f in files]
    assert {f.shape for f in feats} == {(1, 1024)}
    np.testing.assert_allclose(feats[0], np.load(tmp_path / "centre" / "v__0.npy"), atol=1e-5)
    assert not np.allclose(feats[1], feats[0], atol=1e-3)  # corners are different views


def test_rerun_skips_and_changed_setting_recomputes(make_video, tmp_path, i3d_cpu):
    video = make_video("r.mp4", n_frames=32)
    out = tmp_path / "c"
    first = _run([video], out, i3d_cpu)
    assert first.results[0].status == "ok" and first.clips_computed == 2
    again = _run([video], out, i3d_cpu)
    assert again.results[0].status == "skipped" and again.clips_computed == 0
    changed = _run([video], out, i3d_cpu, stride=8)
    assert changed.results[0].status == "ok" and changed.clips_computed == 3  # starts 0, 8, 16
    assert json.loads((out / "r.json").read_text())["clips"]["start_frames"] == [0, 8, 16]


def test_corrupted_feature_file_is_detected_and_recomputed(make_video, tmp_path, i3d_cpu):
    video = make_video("k.mp4", n_frames=16)
    out = tmp_path / "c"
    _run([video], out, i3d_cpu)
    good = (out / "k__0.npy").read_bytes()
    (out / "k__0.npy").write_bytes(good[:-100])
    rec = cache.read_record(out / "k.json")
    with pytest.raises(Exception, match="corrupted"):
        cache.load_features(out, rec, 0)
    report = _run([video], out, i3d_cpu)
    assert report.results[0].status == "ok"
    assert (out / "k__0.npy").read_bytes() == good


def test_broken_files_are_reported_and_the_rest_extracted(make_video, tmp_path, i3d_cpu):
    good = make_video("in/good.mp4", n_frames=16)
    (good.parent / "garbage.mp4").write_bytes(b"definitely not a video" * 50)
    (good.parent / "empty.mp4").write_bytes(b"")
    (good.parent / "trunc.mp4").write_bytes(good.read_bytes()[:300])
    (good.parent / "notes.txt").write_text("ignored: not a video extension")
    out = tmp_path / "c"
    report = _run([good.parent], out, i3d_cpu)
    status = {os.path.basename(r.source): r.status for r in report.results}
    assert status == {"good.mp4": "ok", "garbage.mp4": "failed", "empty.mp4": "failed", "trunc.mp4": "failed"}
    assert all(r.error and r.source in r.error for r in report.failed)
    failures = [json.loads(line) for line in (out / cache.FAILURES_FILE).read_text().splitlines()]
    assert {os.path.basename(f["source"]) for f in failures} == {"garbage.mp4", "empty.mp4", "trunc.mp4"}
    assert sorted(p.name for p in out.glob("*.json")) == ["good.json"]
    assert not list(out.glob(".*.tmp"))


def test_short_video_is_recorded_with_zero_clips(make_video, tmp_path, i3d_cpu):
    report = _run([make_video("short.mp4", n_frames=10)], tmp_path / "c", i3d_cpu)
    assert report.results[0].status == "zero_clips"
    rec = json.loads((tmp_path / "c" / "short.json").read_text())
    assert rec["status"] == "zero_clips" and rec["clips"]["count"] == 0
    assert np.load(tmp_path / "c" / "short__0.npy").shape == (0, 1024)


def test_stem_clash_between_folders_is_resolved_by_content(tmp_path, i3d_cpu):
    from conftest import moving_frames, write_video

    a = write_video(tmp_path / "a" / "cam.mp4", moving_frames(16, 96, 64, seed=1))
    b = write_video(tmp_path / "b" / "cam.mp4", moving_frames(16, 96, 64, seed=2))
    same = tmp_path / "c" / "cam.mp4"
    same.parent.mkdir()
    same.write_bytes(a.read_bytes())
    out = tmp_path / "out"
    report = _run([tmp_path / "b", tmp_path / "a", tmp_path / "c"], out, i3d_cpu)
    by_src = {r.source: r for r in report.results}
    hashed = f"cam-{cache.sha256_file(b)[:8]}"
    assert by_src[str(a)].stem == "cam" and by_src[str(b)].stem == hashed
    assert by_src[str(same)].status == "skipped" and "same content" in by_src[str(same)].note
    assert json.loads((out / f"{hashed}.json").read_text())["source"]["path"] == str(b)
    rerun = _run([tmp_path / "a", tmp_path / "b"], out, i3d_cpu)
    assert [r.status for r in rerun.results] == ["skipped", "skipped"]


def test_cli_help_and_version():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.strip().endswith("0.1.0")
    result = runner.invoke(main, ["extract", "--help"])
    assert result.exit_code == 0 and "--crops" in result.output and "--precision" in result.output


def test_cli_extract_reports_json_and_exit_codes(make_video, tmp_path, monkeypatch, i3d_cpu):
    video = make_video("in/clip.mp4", n_frames=16)
    (video.parent / "bad.mp4").write_bytes(b"junk" * 100)
    monkeypatch.setenv("VADPIPE_HOME", str(tmp_path / "ws"))
    runner = CliRunner()
    result = runner.invoke(main, ["extract", str(video.parent), "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {"ok": 1, "failed": 1}
    assert (tmp_path / "ws" / "features" / "clip__0.npy").exists()  # default workspace cache
    strict = runner.invoke(main, ["extract", str(video.parent), "--strict", "-q"])
    assert strict.exit_code == 1
    assert "failed" in strict.stderr and "bad.mp4" in strict.stderr
    allbad = runner.invoke(main, ["extract", str(video.parent / "bad.mp4"), "-q"])
    assert allbad.exit_code == 1
    missing = runner.invoke(main, ["extract", str(tmp_path / "nothing-here"), "-q"])
    assert missing.exit_code == 1 and "no such file" in missing.stderr


def test_cli_as_a_subprocess(make_video, tmp_path):
    video = make_video("sub.mp4", n_frames=16)
    out = tmp_path / "c"
    proc = subprocess.run(
        [sys.executable, "-m", "vadpipe", "extract", str(video), "--features", str(out), "-q", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 ok" in proc.stderr
    assert np.load(out / "sub__0.npy").shape == (1, 1024)
    bad = subprocess.run(
        [sys.executable, "-m", "vadpipe", "extract", str(video), "--features", str(out), "--clip-len", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "clip-len" in bad.stderr and "Traceback" not in bad.stderr


def test_drop_last_frame_loses_the_clip_that_ends_on_the_last_frame(make_video, tmp_path, i3d_cpu):
    exact, longer = make_video("exact.mp4", n_frames=32), make_video("longer.mp4", n_frames=33)
    plain = _run([exact, longer], tmp_path / "plain", i3d_cpu)
    dropped = _run([exact, longer], tmp_path / "dropped", i3d_cpu, drop_last_frame=True)
    count = {r.source.rsplit("/", 1)[-1]: r.clips for r in dropped.results}
    assert count == {"exact.mp4": 1, "longer.mp4": 2}  # 32 frames: the second clip would end on the last one
    assert {r.source.rsplit("/", 1)[-1]: r.clips for r in plain.results} == {"exact.mp4": 2, "longer.mp4": 2}
    rec = json.loads((tmp_path / "dropped" / "exact.json").read_text())
    assert rec["extractor"]["settings"]["drop_last_frame"] is True and rec["video"]["n_frames"] == 32
    assert rec["extractor"]["settings"]["backbone"] == "kinetics400-scratch"
    np.testing.assert_allclose(
        np.load(tmp_path / "dropped" / "exact__0.npy"), np.load(tmp_path / "plain" / "exact__0.npy")[:1], atol=1e-5
    )  # batching differs
