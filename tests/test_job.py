"""The video job's pieces every executor shares, without the network: clip cutting, naming,
claiming, the claim loop's events and the report collector."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import moving_frames, write_video
from filelock import FileLock

from vadpipe.extract import cache, claims, events, job
from vadpipe.extract.collector import Collector
from vadpipe.extract.decode import Frame, VideoInfo
from vadpipe.extract.fileio import sha256_file
from vadpipe.extract.results import ExtractReport
from vadpipe.extract.settings import ExtractionSettings

SMALL = ExtractionSettings(resize_short=48, crop_size=48, clip_len=4, stride=6).with_weights("w" * 64)


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [Frame(i, i / 25, rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)) for i in range(n)]


def test_cut_clips_keeps_whole_clips_at_the_stride_and_every_frame_time() -> None:
    frames, times = _frames(17), []
    clips = list(job.cut_clips(frames, SMALL, times))
    assert [start for start, _ in clips] == [0, 6, 12]  # 12..15 is whole, 18.. is not
    assert clips[0][1].shape == (1, 3, 4, 48, 48) and clips[0][1].dtype == torch.uint8
    assert times == [f.time_s for f in frames]
    stop = threading.Event()
    stop.set()
    assert list(job.cut_clips(frames, SMALL, [], stop)) == []


def test_clips_per_batch_is_the_one_batch_rule() -> None:
    assert [job.clips_per_batch(b, 1) for b in (1, 2, 8)] == [1, 2, 8]
    assert [job.clips_per_batch(b, 5) for b in (1, 5, 8, 10)] == [1, 1, 2, 2]


def test_features_are_kept_per_clip_with_their_crops_adjacent() -> None:
    video = events.VideoJob(source=Path("v.mp4"), stem="v", sha256="0", size=1)
    video.add_features(np.arange(12, dtype=np.float32).reshape(6, 2), n_crops=3)
    assert [f.tolist() for f in video.feats] == [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]


def _claim_events(sources: list[Path], out: Path, locks: claims.HeldLocks) -> list[events.Event]:
    emitted: list[events.Event] = []

    def hand_over(video, settings, emit, stop) -> bool:
        return emit(events.Claimed(video))

    claims.claim_videos(
        sources,
        out_dir=out,
        settings=SMALL,
        emit=lambda e: emitted.append(e) or True,
        stop=threading.Event(),
        locks=locks,
        decode=hand_over,
    )
    return emitted


def test_claim_loop_names_locks_skips_duplicates_and_fails_one_video(tmp_path: Path) -> None:
    a = write_video(tmp_path / "in" / "a.mp4", moving_frames(8, 64, 48, seed=1))
    copy = tmp_path / "in" / "sub" / "a.mp4"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    gone = tmp_path / "in" / "gone.mp4"
    out = tmp_path / "cache"
    locks = claims.HeldLocks()
    emitted = _claim_events([a, copy, gone], out, locks)
    assert [type(e).__name__ for e in emitted] == ["Claimed", "Duplicate", "Failed", "ClaimsDone"]
    claimed, duplicate, failed = emitted[:3]
    assert claimed.job.stem == "a" and claimed.job.lock.is_locked
    assert duplicate == events.Duplicate(copy, "a", a)
    assert failed.source == gone and failed.error.startswith(f"{gone}: No such file")
    # another process holding the lock: claim_entry does not wait unless asked to
    assert claims.claim_entry(out, "a", source_sha256="x", settings=SMALL, wait=False) is None
    locks.release_all()
    assert not claimed.job.lock.is_locked
    lock = claims.claim_entry(out, "a", source_sha256="x", settings=SMALL, wait=False)
    assert isinstance(lock, FileLock) and lock.is_locked  # no entry yet: to be computed
    lock.release()


def test_a_complete_entry_is_skipped_and_the_collector_reports_in_claim_order(tmp_path: Path) -> None:
    a = write_video(tmp_path / "a.mp4", moving_frames(8, 64, 48, seed=1))
    out = tmp_path / "cache"
    video = events.VideoJob(source=a, stem="a", sha256=sha256_file(a), size=a.stat().st_size)
    video.info = VideoInfo(
        width=64, height=48, fps=25.0, rotation=0, codec="h264", declared_frames=8, declared_duration_s=None
    )
    video.clip_starts.append(0)
    video.add_features(np.ones((1, 1024), dtype=np.float32), n_crops=1)
    written = job.write_video(video, SMALL, np.arange(8) / 25, None, out)
    assert (written.status, written.clips, written.damage) == ("ok", 1, None)
    record = cache.read_record(out / "a.json")
    assert record.clips.start_frames == (0,) and record.clips.end_s == (4 / 25,)
    assert record.extractor.settings_key == SMALL.key()
    assert written.entry.record == record  # the result carries the entry as written
    np.testing.assert_array_equal(written.entry.frame_times, np.arange(8) / 25)
    locks = claims.HeldLocks()
    claimed = _claim_events([a], out, locks)
    assert claimed[0] == events.Skipped(a, written.entry) and not locks._locks
    np.testing.assert_array_equal(claimed[0].entry.frame_times, np.arange(8) / 25)  # as verified

    seen = []
    report = ExtractReport(out_dir=str(out), settings_key=SMALL.key())
    with Collector(report, out_dir=out, total=3, progress=False, on_result=seen.append) as collect:
        collect.take(2, events.Failed(Path("/x/b.mp4"), "/x/b.mp4: broken"))
        collect.take(0, claimed[0])
        collect.take(1, events.Duplicate(Path("/x/c.mp4"), "a", a))
        assert collect.has(1) and not collect.has(3)
    assert [(Path(r.source).name, r.status) for r in report.results] == [
        ("a.mp4", "skipped"),
        ("c.mp4", "skipped"),
        ("b.mp4", "failed"),
    ]
    assert [Path(r.source).name for r in seen] == ["b.mp4", "a.mp4", "c.mp4"]  # as they came
    assert report.results[1].note == f"same content as {a}"
    assert report.results[0].entry == report.results[1].entry == written.entry  # a duplicate shares it
    logged = [json.loads(line) for line in (out / cache.FAILURES_FILE).read_text().splitlines()]
    assert [(f["source"], f["error"]) for f in logged] == [("/x/b.mp4", "/x/b.mp4: broken")]


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (OSError(13, "Permission denied"), "v.mp4: Permission denied"),
        (ValueError("odd"), "v.mp4: unexpected ValueError: odd"),
    ],
)
def test_failure_message_is_one_line_naming_the_video(exc, message) -> None:
    assert job.failure_message(Path("v.mp4"), exc) == message
