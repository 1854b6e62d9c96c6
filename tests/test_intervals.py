"""The intervals document: frame -> second mapping from real timestamps, building, validation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.run_config import SavedOperatingPoint
from vadpipe.postprocess.frame_intervals import (
    build_video_intervals,
    curve_to_source_frames,
    end_time_s,
    frame_span_to_seconds,
    intervals_from_curve,
)
from vadpipe.postprocess.intervals import (
    SCHEMA_VERSION,
    Interval,
    IntervalsDocument,
    OperatingPoint,
    document_to_dict,
    validate_document,
    write_intervals,
)

# Variable frame rate: 25 fps, then a 0.5 s hole, then 10 fps.
VFR_TIMES = np.r_[np.arange(8) * 0.04, 0.78 + np.arange(8) * 0.1]


def test_curve_to_source_frames() -> None:
    np.testing.assert_array_equal(
        curve_to_source_frames(np.arange(8), start_frames=np.array([3, 7]), clip_len=4),
        [3, 4, 5, 6, 7, 8, 9, 10],
    )
    with pytest.raises(DataError, match="curve index out of range"):
        curve_to_source_frames(8, start_frames=np.array([3, 7]), clip_len=4)


def test_frame_span_to_seconds_uses_the_timestamps() -> None:
    assert frame_span_to_seconds(2, 9, frame_times_s=VFR_TIMES) == pytest.approx((0.08, 0.88))
    # A span reaching the last frame ends with the video (default: last frame + last interval).
    assert end_time_s(VFR_TIMES) == pytest.approx(1.58)
    assert frame_span_to_seconds(10, 16, frame_times_s=VFR_TIMES) == pytest.approx((0.98, 1.58))
    assert frame_span_to_seconds(10, 16, frame_times_s=VFR_TIMES, video_end_s=1.6)[1] == 1.6
    with pytest.raises(DataError, match=r"frame span \[3, 17\) is outside 0..16 frames"):
        frame_span_to_seconds(3, 17, frame_times_s=VFR_TIMES)
    with pytest.raises(DataError, match="at least 2 frame times"):
        end_time_s(np.array([0.0]))


def test_intervals_from_curve_maps_runs_to_frames_and_seconds() -> None:
    # 4 clips of 4 frames starting at frame 0; the curve is above 0.35 on curve frames 2-5
    # and 12-15 (the last clip, so its end is the video's end).
    curve = np.zeros(16)
    curve[2:6] = 0.5
    curve[12:16] = 0.9
    got = intervals_from_curve(curve, start_frames=np.array([0, 4, 8, 12]), clip_len=4, frame_times_s=VFR_TIMES)
    assert got == [
        Interval(2, 6, pytest.approx(0.08), pytest.approx(0.24), pytest.approx(0.5)),
        Interval(12, 16, pytest.approx(1.18), pytest.approx(1.58), pytest.approx(0.9)),
    ]


def test_intervals_from_curve_with_offset_clips() -> None:
    # Clips start at frames 1 and 9 (e.g. after a skipped first frame): offsets follow them.
    curve = np.array([0, 0, 0.6, 0.6, 0.6, 0.6, 0, 0])
    (got,) = intervals_from_curve(curve, start_frames=np.array([1, 9]), clip_len=4, frame_times_s=VFR_TIMES)
    assert (got.start_frame, got.end_frame) == (3, 11)  # curve 2..5 -> frames 3, 4, 9, 10
    assert (got.start_s, got.end_s) == pytest.approx((0.12, 1.08))


def test_merge_gap_and_min_duration_in_seconds() -> None:
    curve = np.zeros(16)
    curve[[1, 2]] = 0.8  # frames 1-2: 0.04 .. 0.12 s
    curve[[4]] = 0.8  # frame 4: 0.16 .. 0.20 s, 0.04 s after the first
    curve[[9]] = 0.8  # frame 9: 0.88 .. 0.98 s, across the hole
    kwargs = dict(start_frames=np.arange(0, 16, 4), clip_len=4, frame_times_s=VFR_TIMES)
    assert len(intervals_from_curve(curve, **kwargs)) == 3
    merged = intervals_from_curve(curve, merge_gap_s=0.05, **kwargs)
    assert [(i.start_frame, i.end_frame) for i in merged] == [(1, 5), (9, 10)]
    assert merged[0].score == pytest.approx(np.mean(curve[1:5]))  # gap frames count
    long_only = intervals_from_curve(curve, min_duration_s=0.09, **kwargs)
    assert [(i.start_frame, i.end_frame) for i in long_only] == [(9, 10)]  # 0.1 s long
    with pytest.raises(ConfigError, match="merge_gap_s must be >= 0 seconds"):
        intervals_from_curve(curve, merge_gap_s=-1, **kwargs)
    with pytest.raises(DataError, match="frame curve has 15 values, expected 4 clips x 4"):
        intervals_from_curve(curve[:15], **{**kwargs})


def _document(seed: int = 0) -> IntervalsDocument:
    rng = np.random.default_rng(seed)
    n_clips, clip_len = 12, 16
    times = np.cumsum(rng.uniform(0.03, 0.05, n_clips * clip_len + 7)) - 0.03
    attention = np.r_[np.full(4, 0.05), np.full(4, 0.95), np.full(4, 0.05)]
    tcam = rng.uniform(0.7, 1.0, n_clips)
    video = build_video_intervals(
        source="/videos/street.mp4",
        attention=attention,
        tcam=tcam,
        wtcam=attention * tcam,
        video_score=0.93,
        start_frames=clip_len * np.arange(n_clips),
        clip_len=clip_len,
        frame_times_s=times,
        duration_s=float(times[-1] + 0.04),
        fps=25.0,
        video_end_s=float(times[-1] + 0.04),
        operating_point=OperatingPoint(SavedOperatingPoint(threshold=0.35)),
    )
    return IntervalsDocument(videos=(video,))


def test_built_document_is_valid_and_round_trips(tmp_path) -> None:
    doc = _document()
    (video,) = doc.videos
    assert len(video.clips) == 12 and video.n_frames == 12 * 16 + 7
    (interval,) = video.intervals
    # The attention is high on clips 4-7 = frames 64-127; the spline spreads it a little.
    assert 56 <= interval.start_frame <= 64 and 128 <= interval.end_frame <= 136
    assert video.clips[4].start_s < interval.start_s + 0.5
    path = write_intervals(tmp_path / "out" / "intervals.json", doc)
    loaded = json.loads(path.read_text())
    assert validate_document(loaded) == doc  # the reader gives back the typed document
    assert loaded == json.loads(json.dumps(document_to_dict(doc)))
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert list(loaded) == ["schema_version", "operating_point", "videos", "model", "not_scored", "damaged"]
    assert loaded["operating_point"]["threshold"] == 0.35
    assert list(loaded["videos"][0]["intervals"][0]) == [
        "start_frame",
        "end_frame",
        "start_s",
        "end_s",
        "score",
        "calibrated_score",
    ]
    assert [p.name for p in path.parent.iterdir()] == ["intervals.json"]  # no temp files left


def _mutations():
    def drop(key):
        return lambda d: d["videos"][0].pop(key)

    def set_(path, value):
        def apply(d):
            target = d
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    iv = ["videos", 0, "intervals", 0]
    return [
        (set_(["schema_version"], 2), "schema_version is 2"),
        (drop("fps"), r"videos\[0\].fps is missing"),
        (set_(["videos", 0, "n_frames"], 10.5), r"videos\[0\].n_frames must be int"),
        (set_(["videos", 0, "video_score"], 1.5), r"video_score must lie in \[0, 1\]"),
        (set_(["videos", 0, "source"], None), r"videos\[0\].source must be str"),
        (set_([*iv, "end_frame"], 10**6), r"intervals\[0\]: frames .* must satisfy"),
        (set_([*iv, "start_s"], 1e6), r"intervals\[0\]: start_s .* is after end_s"),
        (set_([*iv, "score"], float("nan")), r"intervals\[0\].score must be finite"),
        (set_([*iv, "start_frame"], True), r"start_frame must be int"),
        (set_(["videos", 0, "clips", 3, "start_s"], -1.0), r"clips\[3\].start_s -1.0 is before"),
        (set_(["operating_point", "merge_gap_s"], -0.5), "merge_gap_s must be >= 0"),
        (lambda d: d["operating_point"].pop("high"), "operating_point.high is missing"),
        (
            lambda d: d["videos"][0]["intervals"].append(dict(d["videos"][0]["intervals"][0])),
            r"intervals\[1\] starts at frame \d+, before the previous interval ends",
        ),
        (lambda d: d.pop("videos"), "document.videos is missing"),
        (set_(["operating_point", "video_threshold"], 2.0), r"operating_point.video_threshold must lie in \[0, 1\]"),
        (set_(["operating_point", "method"], "magic"), "operating_point.method must be one of"),
        (
            set_(["operating_point", "video_calibration"], {"method": "platt", "slope": "x"}),
            "operating_point.video_calibration is unusable",
        ),
        (set_(["videos", 0, "video_probability"], -0.1), r"video_probability must lie in \[0, 1\]"),
        (set_([*iv, "calibrated_score"], 1.2), r"calibrated_score must lie in \[0, 1\]"),
        (set_(["not_scored"], [{"source": "a.mp4", "reason": 3}]), r"not_scored\[0\].reason must be str"),
        (set_(["damaged"], [{"source": "a.mp4"}]), r"damaged\[0\].damage is missing"),
        (set_(["model"], 7), "document.model must be a path or null"),
    ]


@pytest.mark.parametrize(("mutate", "match"), _mutations())
def test_validation_names_the_problem(mutate, match) -> None:
    good = document_to_dict(_document())
    validate_document(good)
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(DataError, match=match):
        validate_document(bad)


def test_write_refuses_an_invalid_document(tmp_path) -> None:
    bad = document_to_dict(_document())
    bad["videos"][0]["intervals"][0]["score"] = 2.0
    with pytest.raises(DataError, match="score must lie in"):
        write_intervals(tmp_path / "x.json", bad)
    assert not (tmp_path / "x.json").exists()
