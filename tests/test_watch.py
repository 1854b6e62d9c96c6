"""vadpipe watch: online scores and events equal detect's, over a real MPEG-TS stream on loopback.

The camera is `tests/stream_server.py`, a real HTTP server process streaming an encoded TS file;
the model is a tiny run trained here on real I3D features of generated videos.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_frames, write_video

from vadpipe.cli import main
from vadpipe.detect import detect_videos, run_extraction_settings
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.sources import parse_source
from vadpipe.extract.stream import ClipItem, ClipQueue
from vadpipe.hooks import EventSink
from vadpipe.model.ensemble import Ensemble
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import load_run
from vadpipe.model.run_config import SavedOperatingPoint
from vadpipe.model.scoring import score_sequences, score_video
from vadpipe.postprocess.events import CurveFrame, EventTracker, OnlineCurve
from vadpipe.postprocess.frame_intervals import intervals_from_curve
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.postprocess.online import OnlineScorer, SegmentHistory
from vadpipe.postprocess.proposals import interpolate_to_frames
from vadpipe.watch import Watch, WatchConfig

HERE = Path(__file__).resolve().parent
SERVER = HERE / "stream_server.py"
CAMERA_FRAMES = 168  # 10 clips and 8 frames left over


# --- pure functions: no I3D ------------------------------------------------------------------


@pytest.mark.parametrize("members", [1, 3], ids=["model", "ensemble"])
@pytest.mark.parametrize("n_rows", [1, 4, 6, 7, 11, 20])
def test_online_scorer_equals_offline_full_rate_scoring(n_rows, members):
    torch.manual_seed(n_rows)
    nets = [CSLTAL(ModelConfig(feature_dim=16)).eval() for _ in range(members)]
    model = nets[0] if members == 1 else Ensemble(nets).eval()
    rng = np.random.default_rng(n_rows)
    crops = rng.normal(size=(2, n_rows, 16)).astype(np.float32)
    offline = score_sequences(model, list(crops), mode="full")
    scorer = OnlineScorer(model, window=64)
    history = SegmentHistory()
    online = [scorer.push(crops[:, t]) for t in range(n_rows)]
    for t, s in enumerate(online):
        history.add(s, crops[:, t], 16 * t)
    video_scores = score_video(model, list(crops), mode="full")
    np.testing.assert_allclose(
        [s.wtcam for s in online] if n_rows > 6 else video_scores.wtcam, video_scores.wtcam, atol=1e-6
    )  # the crops combined as detect combines them
    if n_rows > 6:  # phases from the first clip: final as soon as computed
        for c in range(2):
            np.testing.assert_allclose([s.attention_crops[c] for s in online], offline[c].attention, atol=1e-6)
            np.testing.assert_allclose([s.tcam_crops[c] for s in online], offline[c].tcam, atol=1e-6)
    if n_rows > 6:
        for c in range(2):
            np.testing.assert_allclose([s.wtcam_crops[c] for s in online], offline[c].wtcam, atol=1e-6)
    att, tcam, wtcam = history.final_scores(model)  # short segments: re-scored whole, as offline
    np.testing.assert_allclose(att, np.stack([o.attention for o in offline]), atol=1e-6)
    np.testing.assert_allclose(tcam, np.stack([o.tcam for o in offline]), atol=1e-6)
    np.testing.assert_allclose(wtcam, np.stack([o.wtcam for o in offline]), atol=1e-6)
    if members > 1:  # the members' λ_m·a_m averaged, not the product of averages
        assert not np.allclose(wtcam, att * tcam, atol=1e-6)
    video = np.mean([o.video_score for o in offline])
    assert history.final_video_score(model, scorer) == pytest.approx(video, abs=1e-6)
    if n_rows > 6:
        assert scorer.window_video_score() == pytest.approx(video, abs=1e-6)  # window covers it all


@pytest.mark.parametrize("merge_gap, min_duration", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.6)])
def test_event_tracker_cuts_detects_intervals_from_the_same_curve(merge_gap, min_duration):
    rng = np.random.default_rng(7)
    psi = np.clip(np.convolve(rng.random(60), np.ones(3) / 3, mode="same"), 0, 1).astype(np.float32)
    curve = interpolate_to_frames(psi, clip_len=16)
    times = np.arange(curve.size) / 25.0
    end = float(times[-1] + 0.04)
    expected = intervals_from_curve(
        curve,
        start_frames=np.arange(60) * 16,
        clip_len=16,
        frame_times_s=times,
        video_end_s=end,
        threshold=0.5,
        min_duration_s=min_duration,
        merge_gap_s=merge_gap,
    )
    assert expected  # the curve crosses the threshold
    tracker = EventTracker(
        threshold=0.5, min_duration_s=min_duration, merge_gap_s=merge_gap, time_of=lambda f: float(times[f])
    )
    events = []
    for f, v in enumerate(curve):
        events += tracker.feed(CurveFrame(f, float(v), f // 16), gate_score=1.0)
    events += tracker.finish(end_s_of_segment=lambda f: float(times[f]) if f < len(times) else end)
    ends = [e for e in events if e["event"] == "end"]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == len(ends) == len(expected)
    for e, s, x in zip(ends, starts, expected):
        assert (e["start_frame"], e["end_frame"]) == (x.start_frame, x.end_frame)
        assert e["end_s"] == pytest.approx(x.end_s) and e["start_s"] == pytest.approx(x.start_s)
        assert e["score"] == pytest.approx(x.score, abs=1e-6)
        assert s["start_s"] == e["start_s"] and s["stream_s"] >= s["start_s"] + min_duration - 1e-9


def test_event_tracker_announces_only_what_the_video_gate_lets_through():
    """Frames 10-39 above the threshold; the gate of each frame decides whether it is announced."""
    curve = np.r_[np.zeros(10), np.full(30, 0.9), np.zeros(30)]

    def run(gate):
        tracker = EventTracker(threshold=0.5, merge_gap_s=0.2, video_threshold=0.6, time_of=lambda f: f / 25.0)
        events = [
            e for f, v in enumerate(curve) for e in tracker.feed(CurveFrame(f, float(v), f // 16), gate_score=gate(f))
        ]
        return events + tracker.finish(end_s_of_segment=lambda f: f / 25.0)

    assert run(lambda f: 0.59) == []  # closed over the whole interval: nothing, not even at its end
    opened = run(lambda f: 0.7 if f >= 25 else 0.1)  # opens mid-interval: announced from that frame
    assert [e["event"] for e in opened] == ["start", "end"]
    assert opened[0]["start_frame"] == 10 and opened[0]["stream_s"] == pytest.approx(25 / 25.0)
    assert (opened[1]["start_frame"], opened[1]["end_frame"]) == (10, 40)
    closes = run(lambda f: 0.7 if f < 12 else 0.1)  # closes after the start: the interval runs to its end
    assert [e["event"] for e in closes] == ["start", "end"] and closes[1]["end_frame"] == 40


def test_online_curve_follows_the_offline_spline_on_a_long_stream():
    import scipy.ndimage

    rng = np.random.default_rng(3)
    psi = np.convolve(rng.random(408), np.ones(9) / 9, mode="valid").astype(np.float32)  # 400 smooth-ish clips
    curve = OnlineCurve(clip_len=16, settle=2, low=0.0, high=1.0)
    frames = [fr for t, v in enumerate(psi) for fr in curve.push(t, 16 * t, float(v))] + curve.finish()
    online = np.array([fr.value for fr in frames])
    assert [fr.frame for fr in frames] == list(range(16 * 400))
    np.testing.assert_allclose(online[::16], psi, atol=1e-6)  # through every clip's value
    limit = scipy.ndimage.map_coordinates(psi, (np.arange(6400) / 16)[None], order=3, mode="mirror")
    assert np.abs(online - limit).max() < 0.01  # two clips of look-ahead: the spline with all data
    offline = interpolate_to_frames(psi, clip_len=16, low=0.0, high=1.0)
    assert np.abs(online - offline)[:1600].max() < 0.03  # offline's corner alignment drifts later on


def test_clip_queue_drops_the_oldest_whole_clip_and_counts_it():
    q = ClipQueue(max_clips=2, block=False)
    stop = threading.Event()
    q.put_control(("segment", 0, None, {}))
    for k in range(5):
        q.put_clip(ClipItem(0, 16 * k, torch.zeros(1), 0.0), stop)
    q.put_control(("segment_end", 0, "eof"))
    items = [q.get() for _ in range(len(q))]
    assert q.dropped == 3
    assert items[0][0] == "segment" and items[-1][0] == "segment_end"
    assert [i.start_frame for i in items[1:-1]] == [48, 64]


def test_sources_are_parsed_with_one_clear_error(tmp_path):
    assert parse_source("rtsp://cam.local/stream1").kind == "url"
    assert parse_source("/dev/video0").kind == "device"
    f = tmp_path / "a b.ts"
    f.write_bytes(b"x")
    spec = parse_source(str(f), realtime=True)
    assert spec.kind == "file" and spec.realtime and spec.name == "a_b.ts"
    with pytest.raises(Exception, match="gopher"):
        parse_source("gopher://x/")
    with pytest.raises(Exception, match="neither a URL"):
        parse_source(str(tmp_path / "missing.ts"))


# --- with the real I3D ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, i3d_cpu):
    """A run trained on real I3D features of 4 generated videos (quality is beside the point)."""
    from vadpipe.synth import SplitSize, SynthConfig, make_dataset

    encoder, ident = i3d_cpu
    root = tmp_path_factory.mktemp("watch")
    ds = make_dataset(
        root / "videos", splits={"train": SplitSize(2, 2)}, config=SynthConfig(n_frames=(48, 56)), seed=5, workers=1
    )
    from vadpipe.extract.settings import ExtractionSettings

    report = extract_videos(
        [ds.split_dir("train")],
        out_dir=root / "features",
        settings=ExtractionSettings().with_weights(ident),
        encoder=encoder,
        progress=False,
    )
    assert not report.failed
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--features",
            str(root / "features"),
            "--run",
            str(root / "run"),
            "--recipe",
            "paper",
            "--set",
            "holdout_fraction=0",
            "--epochs",
            "10",
            "--seed",
            "0",
            "-q",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return load_run(root / "run"), root


@pytest.fixture(scope="module")
def camera(tiny_run, i3d_cpu):
    """The camera's footage as an MPEG-TS file, and detect's result on it at a threshold that cuts it."""
    run, root = tiny_run
    frames = moving_frames(CAMERA_FRAMES, 128, 96, seed=11)
    frames[64:112, 20:70, 20:100] = (250, 20, 20)  # something happens in clips 4-6
    path = write_video(root / "camera.ts", frames, fps=25)
    settings = run_extraction_settings(run)
    first = detect_videos(
        [path],
        run,
        cache_dir=root / "cache",
        settings=settings,
        operating_point=OperatingPoint(),
        encoder=i3d_cpu[0],
        progress=False,
    )
    wtcam = np.array([c.wtcam for c in first.document.videos[0].clips])
    threshold = float(np.sort(wtcam)[len(wtcam) // 2])  # about half the clips above: intervals to compare
    op = OperatingPoint(SavedOperatingPoint(threshold=threshold, method="manual"))
    detected = detect_videos(
        [path], run, cache_dir=root / "cache", settings=settings, operating_point=op, encoder=i3d_cpu[0], progress=False
    ).document.videos[0]
    assert detected.intervals
    return path, op, detected


class ListSink(EventSink):
    def __init__(self) -> None:
        self.events: list[dict] = []

    def send(self, event: dict) -> None:
        self.events.append(event)


def _serve(path: Path, *args: str, port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(path), "--port", str(port), *args], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, int(line.split()[1])


def _watch(sources, run, i3d_cpu, op, **config):
    sink, clips, log = ListSink(), [], []
    settings = run_extraction_settings(run).with_weights(i3d_cpu[1])
    w = Watch(
        sources,
        run,
        i3d_cpu[0],
        settings,
        op,
        WatchConfig(**config),
        sinks=[sink],
        on_clip=clips.append,
        log=log.append,
    )
    w.run_until_done()
    return sink.events, clips, log, w


def _check_equal_to_detect(events, clips, detected, segment=0):
    clips = [c for c in clips if c["segment"] == segment]
    assert len(clips) == len(detected.clips) == CAMERA_FRAMES // 16
    for online, offline in zip(clips, detected.clips):
        assert online["start_s"] == pytest.approx(offline.start_s, abs=1e-9)
        for key in ("attention", "tcam", "wtcam"):
            assert online[key] == pytest.approx(getattr(offline, key), abs=1e-5), key
    summary = next(e for e in events if e["event"] == "summary" and e["segment"] == segment)
    assert summary["dropped_clips"] == 0 and summary["clips"] == len(detected.clips)
    assert summary["video_score"] == pytest.approx(detected.video_score, abs=1e-5)
    assert len(summary["intervals"]) == len(detected.intervals)
    for got, want in zip(summary["intervals"], detected.intervals):
        assert (got["start_frame"], got["end_frame"]) == (want.start_frame, want.end_frame)
        assert got["start_s"] == pytest.approx(want.start_s) and got["end_s"] == pytest.approx(want.end_s)
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
    # the live events: the same intervals, boundaries within a clip (the offline curve's drift)
    ends = [e for e in events if e["event"] == "end" and e["segment"] == segment]
    starts = [e for e in events if e["event"] == "start" and e["segment"] == segment]
    assert len(ends) == len(starts) == len(detected.intervals)
    for got, want in zip(ends, detected.intervals):
        assert abs(got["start_frame"] - want.start_frame) < 16 and abs(got["end_frame"] - want.end_frame) < 16
        assert got["peak"] >= got["score"] > detected.intervals[0].score - 0.2


@pytest.mark.slow
def test_http_stream_scores_and_events_equal_detect(tiny_run, camera, i3d_cpu):
    run, _ = tiny_run
    path, op, detected = camera
    server, port = _serve(path)
    try:
        events, clips, log, w = _watch(
            [parse_source(f"http://127.0.0.1:{port}/cam", name="gate")], run, i3d_cpu, op, lag="wait", reconnect=False
        )
    finally:
        server.kill()
    _check_equal_to_detect(events, clips, detected)
    assert all(e["camera"] == "gate" and e["wall_time"].endswith("Z") for e in events)
    assert w.statuses()[0].dropped == 0


def _without_updates(events: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in e.items() if k not in ("wall_time", "latency_s", "dropped_clips")}
        for e in events
        if e["event"] != "update"
    ]


def _assert_same_events(got, want, where="events"):
    """Equal event lists: the same kinds, keys and integers, floats to 1e-5 (I3D batches may differ)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _assert_same_events(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_events(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


@pytest.mark.slow
def test_update_events_come_only_while_an_interval_is_open_and_change_nothing(tiny_run, camera, i3d_cpu):
    run, _ = tiny_run
    path, op, detected = camera
    plain, _, _, _ = _watch([parse_source(str(path), name="lobby")], run, i3d_cpu, op, lag="wait")
    events, clips, _, _ = _watch(
        [parse_source(str(path), name="lobby")], run, i3d_cpu, op, lag="wait", update_every_s=1e-6
    )  # an update after every scored clip of an open interval
    _check_equal_to_detect(events, clips, detected)
    _assert_same_events(_without_updates(events), _without_updates(plain))  # the closed events are unchanged
    assert not any(e["event"] == "update" for e in plain)
    updates = [e for e in events if e["event"] == "update"]
    assert updates
    open_interval, seen = None, []
    for e in events:
        if e["event"] == "start":
            assert open_interval is None
            open_interval, seen = e, []
        elif e["event"] == "update":
            assert open_interval is not None, "an update outside an interval"
            assert e["start_frame"] == open_interval["start_frame"] and e["start_s"] == open_interval["start_s"]
            assert e["stream_s"] >= open_interval["stream_s"] and 0.0 <= e["score"] <= e["peak"]
            assert e["camera"] == "lobby" and e["segment"] == open_interval["segment"]
            seen.append(e)
        elif e["event"] == "end":
            assert open_interval is not None and e["start_frame"] == open_interval["start_frame"]
            peaks = [u["peak"] for u in seen]
            assert peaks == sorted(peaks) and all(p <= e["peak"] + 1e-12 for p in peaks)
            assert all(u["stream_s"] <= e["end_s"] for u in seen)
            open_interval = None
    assert open_interval is None


@pytest.mark.slow
def test_an_ensemble_run_is_watched_with_detects_numbers(tiny_run, camera, i3d_cpu, tmp_path):
    """An ensemble's live curve is the mean of its members' λ_m·a_m, clip by clip, as detect's."""
    from vadpipe.model.run import save_run

    run, root = tiny_run
    path = camera[0]
    torch.manual_seed(3)
    other = CSLTAL(run.model.config).eval()  # a second, differently initialised member
    sections = {
        k: v
        for k, v in json.loads((run.path / "config.json").read_text()).items()
        if k not in ("model", "schema_version", "vadpipe_version")
    }
    save_run(tmp_path / "ens", Ensemble([run.model, other]), config={**sections, "ensemble": {"size": 2}})
    ensemble = load_run(tmp_path / "ens")
    assert len(ensemble.model.members) == 2
    settings = run_extraction_settings(ensemble)
    first = detect_videos(
        [path],
        ensemble,
        cache_dir=root / "cache",
        settings=settings,
        operating_point=OperatingPoint(),
        encoder=i3d_cpu[0],
        progress=False,
    ).document.videos[0]
    wtcam = np.array([c.wtcam for c in first.clips])
    op = OperatingPoint(SavedOperatingPoint(threshold=float(np.sort(wtcam)[len(wtcam) // 2]), method="manual"))
    detected = detect_videos(
        [path],
        ensemble,
        cache_dir=root / "cache",
        settings=settings,
        operating_point=op,
        encoder=i3d_cpu[0],
        progress=False,
    ).document.videos[0]
    assert detected.intervals
    assert not np.allclose(wtcam, [c.attention * c.tcam for c in first.clips], atol=1e-6)  # not mean(λ)·mean(a)
    events, clips, _, _ = _watch([parse_source(str(path), name="lobby")], ensemble, i3d_cpu, op, lag="wait")
    _check_equal_to_detect(events, clips, detected)


@pytest.mark.slow
def test_a_killed_server_is_reconnected_after_a_gap_event(tiny_run, camera, i3d_cpu):
    run, _ = tiny_run
    path, op, detected = camera
    size = path.stat().st_size
    server, port = _serve(path, "--die-after", str(size // 3))  # dies a third of the way in
    restarted: list[subprocess.Popen] = []

    def restart() -> None:
        server.wait()
        time.sleep(1.5)  # the camera is away for a while, then serves the whole file once and dies
        restarted.append(_serve(path, "--die-after", str(size), port=port)[0])

    threading.Thread(target=restart, daemon=True).start()
    try:
        events, clips, log, w = _watch(
            [parse_source(f"http://127.0.0.1:{port}/", name="door")],
            run,
            i3d_cpu,
            op,
            lag="wait",
            reconnect_for_s=10.0,
            open_timeout_s=5.0,
        )
    finally:
        for p in [server, *restarted]:
            p.kill()
    kinds = [e["event"] for e in events]
    assert kinds.count("gap") == 1, kinds
    gap = events[kinds.index("gap")]
    assert gap["missing_s"] > 1.0 and gap["camera"] == "door"
    first = [e for e in events if e.get("segment") == 0]
    assert first[-1]["event"] == "summary" and 0 < first[-1]["clips"] < CAMERA_FRAMES // 16
    assert events.index(first[-1]) < kinds.index("gap")  # segment 0 is closed before the gap is reported
    _check_equal_to_detect(events, clips, detected, segment=1)  # the camera came back from the start
    assert w.statuses()[0].state == "ended" and "gave up" in (w.cameras[0].reader.stats.last_error or "")


@pytest.mark.slow
def test_a_bad_url_fails_one_camera_and_the_others_go_on(tiny_run, i3d_cpu, tmp_path):
    run, _ = tiny_run
    short = write_video(tmp_path / "short.ts", moving_frames(40, 96, 64), fps=25)
    sources = [parse_source("http://127.0.0.1:9/nothing", name="bad"), parse_source(str(short), name="good")]
    events, clips, log, w = _watch(sources, run, i3d_cpu, OperatingPoint(), open_timeout_s=2.0)
    errors = [e for e in events if e["event"] == "error"]
    assert [e["camera"] for e in errors] == ["bad"]
    assert "cannot open http://127.0.0.1:9/nothing" in errors[0]["message"] and "\n" not in errors[0]["message"]
    assert sum(1 for line in log if line.startswith("error")) == 1
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["camera"] == "good" and summary["clips"] == 2
    assert {s.name: s.state for s in w.statuses()} == {"bad": "failed", "good": "ended"}


@pytest.mark.slow
def test_live_source_faster_than_compute_drops_whole_clips_and_counts_them(tiny_run, i3d_cpu, tmp_path):
    run, _ = tiny_run
    fast = write_video(tmp_path / "fast.ts", moving_frames(320, 96, 64), fps=250)  # 15.6 clips/s needed
    events, clips, log, w = _watch(
        [parse_source(str(fast), name="fast", realtime=True)],
        run,
        i3d_cpu,
        OperatingPoint(SavedOperatingPoint(threshold=0.0, method="manual")),
        queue_clips=1,
    )
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["dropped_clips"] > 0 and summary["intervals"] is None  # not detect's frames any more
    assert summary["clips"] + summary["dropped_clips"] == 20 == len(clips) + w.statuses()[0].dropped
    assert any("will be dropped" in line for line in log)
    assert all(e["dropped_clips"] <= summary["dropped_clips"] for e in events if e["event"] in ("start", "end"))


class _Collector(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a) -> None:
        pass


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear in {path}")


def _playable_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_cli_watch_with_hooks_and_clips_survives_being_stopped(tiny_run, camera, tmp_path, how):
    run, root = tiny_run
    path, op, _ = camera
    _Collector.received = []
    hook_server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=hook_server.serve_forever, daemon=True).start()
    events, hook_log, clips = tmp_path / "events.jsonl", tmp_path / "hook.jsonl", tmp_path / "clips"
    camera_server, port = _serve(path, "--loop", "--rate", str(path.stat().st_size / (CAMERA_FRAMES / 25)))
    cmd = [
        sys.executable,
        "-m",
        "vadpipe",
        "watch",
        f"http://127.0.0.1:{port}/live",
        "--run",
        str(run.path),
        "--threshold",
        "0.01",
        "--events",
        str(events),
        "--save-clips",
        str(clips),
        "--pre-roll",
        "1",
        "--webhook",
        f"http://127.0.0.1:{hook_server.server_address[1]}/hook",
        "--on-event",
        f"{sys.executable} -c \"import sys; open({str(hook_log)!r}, 'a').write(sys.stdin.read() + chr(10))\"",
        "--update-every",
        "0.2",
        "--device",
        "cpu",
        "--no-panel",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(events, '"start"', proc)
        _wait_for(events, '"update"', proc)  # --update-every: the open interval is reported on
        time.sleep(1.0)
        proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        camera_server.kill()
        hook_server.shutdown()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    start = next(e for e in lines if e["event"] == "start")
    assert start["camera"] == f"127.0.0.1_{port}_live" and start["latency_s"] is not None
    mp4 = Path(start["clip"])
    assert mp4.parent == clips and _playable_frames(mp4) >= 16  # a fragmented MP4 plays even after a kill
    if how == "SIGTERM":
        assert proc.returncode == 130, err
        kinds = [e["event"] for e in lines]
        assert kinds[-2:] == ["end", "summary"] and lines[-2]["reason"] == "stopped"
        at = [i for i, k in enumerate(kinds) if k == "update"]  # threshold 0.01: one interval, open until the stop
        assert at and kinds.index("start") < at[0] and at[-1] < len(kinds) - 2
        assert all(
            lines[i]["start_frame"] == start["start_frame"] and lines[i]["peak"] <= lines[-2]["peak"] for i in at
        )
        assert [e["event"] for e in _Collector.received][:1] == ["start"]
        assert {e["event"] for e in _Collector.received} >= {"start", "end", "summary"}
        hooked = [json.loads(line) for line in hook_log.read_text().splitlines() if line.strip()]
        assert [e["event"] for e in hooked] == kinds
    else:
        assert proc.returncode == -signal.SIGKILL


def test_camera_config_file_names_each_camera(tmp_path):
    from vadpipe.cmd_watch import read_camera_config

    video = write_video(tmp_path / "lobby.ts", moving_frames(20, 64, 48), fps=25)
    config = tmp_path / "cameras.toml"
    config.write_text(
        f'[[camera]]\nname = "gate"\nurl = "rtsp://10.0.0.7/s1"\n\n'
        f'[[camera]]\nname = "lobby"\nurl = "{video}"\nrealtime = true\n'
    )
    specs = read_camera_config(config, realtime=False)
    assert [(s.name, s.kind, s.realtime) for s in specs] == [("gate", "url", False), ("lobby", "file", True)]
    config.write_text('[[camera]]\nname = "x"\n')
    with pytest.raises(Exception, match="needs a url"):
        read_camera_config(config, realtime=False)


def test_live_panel_shows_one_row_per_camera(i3d_cpu, tmp_path):
    from rich.console import Console

    from vadpipe.extract.settings import ExtractionSettings
    from vadpipe.model.run import Run
    from vadpipe.panel import render

    video = write_video(tmp_path / "yard.ts", moving_frames(20, 64, 48), fps=25)
    run = Run(path=tmp_path, config={}, model=CSLTAL(ModelConfig()).eval())
    w = Watch(
        [parse_source(str(video), name="yard"), parse_source("rtsp://127.0.0.1:1/x", name="gate")],
        run,
        i3d_cpu[0],
        ExtractionSettings().with_weights(i3d_cpu[1]),
        OperatingPoint(),
    )
    w.cameras[0].status.last_event = "start at 1.2s"
    console = Console(record=True, width=120)
    console.print(render(w))
    text = console.export_text()
    for expected in (
        "camera",
        "state",
        "fps in",
        "clips/s",
        "dropped",
        "last event",
        "yard",
        "gate",
        "connecting",
        "start at 1.2s",
    ):
        assert expected in text


def test_udp_mpegts_camera_delivers_every_frame_as_clips(tmp_path):
    """A real UDP MPEG-TS sender (PyAV, paced at the frame rate) to the stream reader on loopback."""
    import socket

    from vadpipe.extract.settings import ExtractionSettings
    from vadpipe.extract.stream import StreamReader

    video = write_video(tmp_path / "udp.ts", moving_frames(72, 96, 64), fps=25)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q, stop = ClipQueue(max_clips=100, block=True), threading.Event()
    reader = StreamReader(
        parse_source(f"udp://127.0.0.1:{port}", name="udp"),
        ExtractionSettings(),
        q,
        stop,
        reconnect=False,
        open_timeout_s=20,
        read_timeout_s=3,
    )
    reader.start()
    time.sleep(0.5)

    def send() -> None:
        with av.open(str(video)) as src, av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", "w", format="mpegts") as out:
            stream = src.streams.video[0]
            target = out.add_stream_from_template(stream)
            t0 = time.monotonic()
            for packet in src.demux(stream):
                if packet.size == 0:
                    continue
                time.sleep(max(0.0, float(packet.pts * stream.time_base) - (time.monotonic() - t0)))
                packet.stream = target
                out.mux(packet)

    threading.Thread(target=send, daemon=True).start()
    reader.join(60)
    stop.set()
    items = [q.get() for _ in range(len(q))]
    clips = [i for i in items if isinstance(i, ClipItem)]
    assert [i[0] for i in items if not isinstance(i, ClipItem)] == ["segment", "segment_end", "finished"]
    assert [c.start_frame for c in clips] == [0, 16, 32, 48] and reader.stats.frames == 72


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["warn", "error"])
def test_a_camera_unlike_the_training_footage_gets_an_ood_event(tiny_run, i3d_cpu, shared_dir, mode):
    """The run saw synthetic plazas only; a real street (bikes.mp4) turns its window outside."""
    run, _ = tiny_run
    assert (run.path / "ood.safetensors").exists()
    street = parse_source(str(shared_dir / "media" / "bikes.mp4"), name="street")
    events, clips, log, w = _watch([street], run, i3d_cpu, OperatingPoint(), ood=mode)
    ood = [e for e in events if e["event"] == "ood"]
    assert ood and ood[0]["outside_training"] is True and ood[0]["share_outside"] > ood[0]["max_share"]
    assert ood[0]["window_clips"] >= 8 and ood[0]["camera"] == "street"
    lines = [line for line in log if "outside the training footage" in line]
    assert len(lines) == 1 and lines[0].startswith("error: " if mode == "error" else "warning: ")
    assert w.outside_error is (mode == "error")
    if mode == "warn":  # the watch goes on to the end of the file
        summary = next(e for e in events if e["event"] == "summary")
        assert summary["clips"] == 15 and summary["ood"]["outside_training"] is True
        assert summary["ood"]["share_outside"] > 0.5
