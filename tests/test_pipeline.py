"""End to end through the CLI: generated videos -> extract -> train -> evaluate -> detect."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO as REPO_ROOT
from conftest import moving_frames, write_video

from vadpipe.cli import main
from vadpipe.postprocess.intervals import validate_document
from vadpipe.synth import SplitSize, SynthConfig, make_dataset

pytestmark = pytest.mark.slow  # extract (real I3D), train and detect end to end


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small synthetic set, extracted with the real I3D and trained through the CLI."""
    root = tmp_path_factory.mktemp("e2e")
    ds = make_dataset(
        root / "videos",
        splits={"train": SplitSize(6, 6), "test": SplitSize(1, 2)},
        config=SynthConfig(n_frames=(80, 96)),
        seed=3,
    )
    runner = CliRunner()
    feats = {s: root / "features" / s for s in ("train", "test")}
    for split, out in feats.items():
        _ok(runner.invoke(main, ["extract", str(ds.split_dir(split)), "--features", str(out), "-q"]))
    run = root / "run"
    _ok(
        runner.invoke(
            main,
            [
                "train",
                "--features",
                str(feats["train"]),
                "--run",
                str(run),
                "--recipe",
                "paper",
                "--set",
                "holdout_fraction=0.25",
                "--epochs",
                "40",
                "--seed",
                "0",
                "-q",
            ],
        )
    )
    return ds, feats, run, root


def test_train_then_evaluate_on_extracted_features(trained):
    ds, feats, run, root = trained
    config = json.loads((run / "config.json").read_text())
    assert config["extraction"]["settings"]["crops"] == "center"
    assert (run / "weights.safetensors").is_file()
    out = root / "metrics.json"
    _ok(
        CliRunner().invoke(
            main,
            [
                "evaluate",
                "--run",
                str(run),
                "--features",
                str(feats["test"]),
                "--annotations",
                str(ds.annotations_path),
                "--json",
                str(out),
                "-q",
            ],
        )
    )
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "standard"
    for level in ("video", "segment", "frame", "proposal"):
        assert set(metrics[level]) >= {"auc", "ap", "ap_trapezoid"}
    assert metrics["frame"]["auc"] > 0.6  # learnt something real from 12 videos


def test_detect_finds_the_planted_anomaly_and_writes_valid_json_and_plots(trained, tmp_path):
    ds, feats, run, _ = trained
    out, plots = tmp_path / "intervals.json", tmp_path / "plots"
    result = _ok(
        CliRunner().invoke(
            main,
            [
                "detect",
                str(ds.split_dir("test")),
                "--run",
                str(run),
                "--features",
                str(feats["test"]),
                "--json",
                str(out),
                "--plot",
                str(plots),
                "--annotations",
                str(ds.annotations_path),
                "-q",
            ],
        )
    )
    doc = json.loads(out.read_text())
    validate_document(doc)
    assert doc["schema_version"] == 1 and len(doc["videos"]) == 3
    truth = {v.stem: v for v in ds.split("test")}
    for video in doc["videos"]:
        stem = video["source"].rsplit("/", 1)[-1][:-4]
        clips = video["clips"]
        assert len(clips) == video["n_frames"] // 16
        t = truth[stem]
        if t.label == 1:
            s, e = t.anomaly.start_frame, t.anomaly.end_frame
            best = max(video["intervals"], key=lambda i: i["score"])
            assert best["start_frame"] < e and best["end_frame"] > s, (stem, best, (s, e))
            inside = [c["wtcam"] for k, c in enumerate(clips) if s <= 16 * k + 8 < e]
            outside = [c["wtcam"] for k, c in enumerate(clips) if not s <= 16 * k + 8 < e]
            assert np.mean(inside) > np.mean(outside)
    pngs = sorted(plots.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 600 <= width <= 3000 and 200 <= height <= 2000
    assert "video score" in result.stderr


def test_detect_maps_variable_frame_rate_times_from_timestamps(trained, tmp_path):
    _, _, run, _ = trained
    pts = [int(1000 * t) for t in np.cumsum(np.r_[0, np.where(np.arange(47) % 2, 0.02, 0.1)])]
    video = write_video(tmp_path / "vfr.mp4", moving_frames(48, 160, 120), pts=pts, time_base=Fraction(1, 1000))
    result = _ok(
        CliRunner().invoke(
            main,
            [
                "detect",
                str(video),
                "--run",
                str(run),
                "--features",
                str(tmp_path / "c"),
                "--json",
                "-",
                "--threshold",
                "0.0",
                "-q",
            ],
        )
    )
    doc = json.loads(result.stdout)
    (entry,) = doc["videos"]
    times = np.array(pts) / 1000
    assert [c["start_s"] for c in entry["clips"]] == pytest.approx(times[[0, 16, 32]].tolist())
    for interval in entry["intervals"]:
        assert interval["start_s"] == pytest.approx(times[interval["start_frame"]])
    assert entry["duration_s"] == pytest.approx(times[-1] + (times[-1] - times[-2]))


def test_detect_report_writes_a_review_folder_of_the_same_videos(trained, tmp_path):
    ds, feats, run, _ = trained
    out, review = tmp_path / "intervals.json", tmp_path / "review"
    result = _ok(
        CliRunner().invoke(
            main,
            [
                "detect",
                str(ds.split_dir("test")),
                "--run",
                str(run),
                "--features",
                str(feats["test"]),
                "--json",
                str(out),
                "--report",
                str(review),
                "--annotations",
                str(ds.annotations_path),
                "-q",
            ],
        )
    )
    doc = json.loads(out.read_text())
    text = (review / "index.html").read_text()
    index = json.loads(text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert [v["source"] for v in index["videos"]] == [v["source"] for v in doc["videos"]]
    for v in index["videos"]:  # synth writes H.264 4:2:0 MP4: linked, no proxy; a thumbnail per interval
        assert v["media_kind"] == "source" and len(v["thumbs"]) == max(1, v["n_intervals"])
        assert (review / v["page"]).is_file()
    assert index["report"]["has_truth"] and "report:" in result.stderr


def test_detect_refuses_settings_the_model_was_not_trained_with(trained, make_video, tmp_path):
    _, _, run, _ = trained
    video = make_video("x.mp4", n_frames=16)
    result = CliRunner().invoke(
        main, ["detect", str(video), "--run", str(run), "--crops", "five", "--features", str(tmp_path / "c"), "-q"]
    )
    assert result.exit_code == 2
    assert "crops='five'" in result.stderr and "model: 'center'" in result.stderr


def test_detect_reports_too_short_videos_instead_of_failing(trained, make_video, tmp_path):
    _, _, run, _ = trained
    video = make_video("short.mp4", n_frames=8)
    result = _ok(
        CliRunner().invoke(
            main, ["detect", str(video), "--run", str(run), "--features", str(tmp_path / "c"), "--json", "-", "-q"]
        )
    )
    doc = json.loads(result.stdout)
    assert doc["videos"] == [] and doc["not_scored"][0]["reason"].startswith("too short")
    assert "too short" in result.stderr


# --- outside the training footage (issue 20) -------------------------------------------------

BIKES = REPO_ROOT / ".." / "shared" / "media" / "bikes.mp4"


def _ood_lines(stderr: str, kind: str) -> list[str]:
    """The per-video lines (one per video outside the training footage)."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith(f"{kind}: ") and "of its clips are outside the training footage" in line
    ]


@pytest.mark.skipif(not BIKES.is_file(), reason=f"real footage {BIKES} not found (the read-only ../shared folder)")
def test_detect_marks_real_footage_outside_the_synthetic_training_footage(trained, tmp_path):
    ds, feats, run, _ = trained
    assert (run / "ood.safetensors").is_file()  # stored by vadpipe train
    cache, out, plots = tmp_path / "cache", tmp_path / "intervals.json", tmp_path / "plots"
    args = ["detect", str(ds.split_dir("test")), str(BIKES), "--run", str(run), "--features", str(cache), "-q"]
    result = _ok(CliRunner().invoke(main, args + ["--json", str(out), "--plot", str(plots)]))
    doc = json.loads(out.read_text())
    validate_document(doc)
    judged = {Path(v["source"]).name: v["ood"] for v in doc["videos"]}
    assert judged["bikes.mp4"]["outside_training"] and judged["bikes.mp4"]["share_outside"] > 0.9
    synthetic = [o for name, o in judged.items() if name != "bikes.mp4"]
    assert len(synthetic) == 3 and not any(o["outside_training"] for o in synthetic)
    (line,) = _ood_lines(result.stderr, "warning")
    assert line.startswith("warning: bikes.mp4: ") and "not valid" in line and "train again" in line
    assert {p.name for p in plots.glob("*.png")} >= {"bikes.png"}

    failed = CliRunner().invoke(main, args + ["--ood", "error"])  # the cache is reused: no I3D this time
    assert failed.exit_code == 2
    assert [line.split(":")[1] for line in _ood_lines(failed.stderr, "error")] == [" bikes.mp4"]
    assert "1 of 4 video(s) are outside the training footage" in failed.stderr
    quiet = _ok(CliRunner().invoke(main, args + ["--ood", "ignore"]))
    assert not _ood_lines(quiet.stderr, "warning") and not _ood_lines(quiet.stderr, "error")


def test_evaluate_reports_test_videos_like_the_training_footage(trained):
    ds, feats, run, _ = trained
    result = _ok(
        CliRunner().invoke(
            main,
            [
                "evaluate",
                "--run",
                str(run),
                "--features",
                str(feats["test"]),
                "--annotations",
                str(ds.annotations_path),
                "--json",
                "-",
                "-q",
                "--ood",
                "error",
            ],
        )
    )
    report = json.loads(result.stdout)
    assert report["ood"]["outside"] == [] and len(report["ood"]["videos"]) == 3


def test_a_model_from_before_the_check_still_loads_and_says_once_it_cannot_judge(trained, tmp_path):
    ds, feats, run, _ = trained
    old = tmp_path / "old-run"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("ood.safetensors", "checkpoint"))
    result = _ok(
        CliRunner().invoke(
            main,
            [
                "detect",
                str(ds.split_dir("test")),
                "--run",
                str(old),
                "--features",
                str(feats["test"]),
                "--json",
                "-",
                "--ood",
                "error",
                "-q",
            ],
        )
    )
    assert all(v["ood"] is None for v in json.loads(result.stdout)["videos"])
    assert result.stderr.count("cannot tell whether these videos are like it") == 1
