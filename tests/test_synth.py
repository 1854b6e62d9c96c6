"""Tests of the synthetic video generator: real encoding, decoded back with PyAV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from vadpipe.errors import ConfigError, DataError
from vadpipe.synth import (
    ANOMALY_KINDS,
    Anomaly,
    SplitSize,
    SynthConfig,
    available_codec,
    load_dataset,
    make_dataset,
    render_frames,
    render_video,
    sample_anomaly,
)

# Small enough to be fast, large enough that figures are more than a few pixels tall.
TINY = SynthConfig(width=128, height=96, fps=25, n_frames=(33, 40), n_figures=(3, 5))


def decode(path: Path) -> tuple[np.ndarray, list[float], av.video.stream.VideoStream]:
    """All frames ``(T, H, W, 3)`` uint8 RGB, their presentation times in seconds, and the stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
        return np.stack(frames), times, stream


def moving_share(frames: np.ndarray) -> np.ndarray:
    """Per frame transition, the share of pixels that changed by more than sensor noise could explain."""
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=3)
    return (diff > 12).mean(axis=(1, 2))


def test_same_seed_gives_identical_frames_and_other_seed_differs(tmp_path):
    anomaly = Anomaly("fight", 10, 30)
    a = render_video(tmp_path / "a.mp4", n_frames=40, anomaly=anomaly, config=TINY, seed=7)
    b = render_video(tmp_path / "b.mp4", n_frames=40, anomaly=anomaly, config=TINY, seed=7)
    c = render_video(tmp_path / "c.mp4", n_frames=40, anomaly=anomaly, config=TINY, seed=8)
    frames_a, frames_b, frames_c = (decode(t.path)[0] for t in (a, b, c))
    assert np.array_equal(frames_a, frames_b)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert np.abs(frames_a.astype(int) - frames_c.astype(int)).mean() > 5
    # The file holds what render_frames makes, up to lossy coding.
    raw = np.stack(list(render_frames(n_frames=40, anomaly=anomaly, config=TINY, seed=7)))
    assert np.abs(raw.astype(int) - frames_a.astype(int)).mean() < 4


@pytest.mark.parametrize("codec", ["auto", "mpeg4"])
def test_decoded_video_has_the_promised_geometry_and_timing(tmp_path, codec):
    config = SynthConfig(width=160, height=120, fps=20, codec=codec)
    truth = render_video(tmp_path / "v.mp4", n_frames=37, anomaly=None, config=config, seed=1)
    frames, times, stream = decode(truth.path)
    assert frames.shape == (37, 120, 160, 3)
    assert stream.average_rate == 20
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert times == pytest.approx([i / 20 for i in range(37)], abs=1e-6)
    expected = {"libx264": "h264", "mpeg4": "mpeg4"}[available_codec(codec)]
    assert stream.codec_context.name == expected
    assert (truth.label, truth.anomaly, truth.intervals, truth.kind) == (0, None, [], "normal")
    assert truth.frame_labels().sum() == 0


def test_dataset_layout_labels_and_annotations_agree(tmp_path):
    root = tmp_path / "data"
    splits = {"train": SplitSize(normal=2, anomalous=4), "test": SplitSize(normal=1, anomalous=1)}
    seen = []
    ds = make_dataset(root, splits=splits, config=TINY, seed=3, workers=1, on_video=seen.append)
    assert len(seen) == len(ds.videos) == 8

    # Folders give the labels; stems are unique across splits and carry XD-Violence's label tag.
    for v in ds.videos:
        assert v.path == root / v.split / ("anomalous" if v.label else "normal") / f"{v.stem}.mp4"
        assert v.path.is_file()
        assert ("_label_A" in v.stem) == (v.label == 0)
    assert len({v.stem for v in ds.videos}) == 8
    assert sorted(p.name for p in root.iterdir()) == ["annotations.txt", "labels.csv", "manifest.json", "test", "train"]
    assert not list(root.rglob(".*"))  # no temp files left behind
    # Four anomalous training videos cycle through all four kinds.
    assert sorted(v.kind for v in ds.split("train") if v.label) == sorted(ANOMALY_KINDS)

    # annotations.txt: XD-Violence format, half-open intervals inside the video, anomalous videos only.
    by_stem = {v.stem: v for v in ds.videos}
    lines = ds.annotations_path.read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        stem, *numbers = line.split(" ")
        start, end = map(int, numbers)
        video = by_stem[stem]
        assert video.label == 1
        assert 0 <= start < end <= video.n_frames
        assert [(start, end)] == video.intervals
        lo, hi = TINY.anomaly_fraction
        assert round(lo * video.n_frames) <= end - start <= round(hi * video.n_frames)

    with ds.labels_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["video"]: int(r["label"]) for r in rows} == {v.stem: v.label for v in ds.videos}

    manifest = json.loads(ds.manifest_path.read_text())
    assert manifest["schema_version"] == 1
    assert manifest["splits"] == {"train": {"normal": 2, "anomalous": 4}, "test": {"normal": 1, "anomalous": 1}}
    for record in manifest["videos"]:
        assert (root / record["path"]).is_file()
        if record["anomaly"]:
            a = record["anomaly"]
            assert a["start_s"] == pytest.approx(a["start_frame"] / TINY.fps)

    # The files really have the recorded length, size and rate.
    for v in ds.videos:
        frames, times, stream = decode(v.path)
        assert frames.shape == (v.n_frames, v.height, v.width, 3)
        assert TINY.n_frames[0] <= v.n_frames <= TINY.n_frames[1]
        assert stream.average_rate == v.fps

    assert load_dataset(root) == ds


def test_videos_depend_only_on_seed_split_and_index_not_on_workers(tmp_path):
    splits = {"train": SplitSize(normal=1, anomalous=1)}
    one = make_dataset(tmp_path / "one", splits=splits, config=TINY, seed=5, workers=1)
    two = make_dataset(tmp_path / "two", splits=splits, config=TINY, seed=5, workers=2)
    more = make_dataset(tmp_path / "more", splits={"train": SplitSize(1, 2)}, config=TINY, seed=5, workers=1)
    for a, b in zip(one.videos, two.videos):
        assert a.path.read_bytes() == b.path.read_bytes()
    assert one.videos[0].path.read_bytes() == more.videos[0].path.read_bytes()
    other = make_dataset(tmp_path / "other", splits=splits, config=TINY, seed=6, workers=1)
    assert one.videos[0].path.read_bytes() != other.videos[0].path.read_bytes()


def test_regenerating_replaces_the_old_dataset_and_foreign_folders_are_refused(tmp_path):
    root = tmp_path / "data"
    first = make_dataset(root, splits={"a": SplitSize(1, 2)}, config=TINY, seed=0, workers=1)
    second = make_dataset(root, splits={"b": SplitSize(1, 0)}, config=TINY, seed=0, workers=1)
    assert all(not v.path.exists() for v in first.videos)
    assert not (root / "a").exists()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4")) == [
        v.path.relative_to(root).as_posix() for v in second.videos
    ]
    assert root.joinpath("annotations.txt").read_text() == ""

    (root / "b" / "normal" / "mine.mp4").write_bytes(b"not ours")
    with pytest.raises(DataError, match="not part of the synthetic dataset"):
        make_dataset(root, splits={"b": SplitSize(1, 0)}, config=TINY, workers=1)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.mp4").write_bytes(b"x")
    with pytest.raises(DataError, match="not empty and holds no vadpipe synthetic dataset"):
        make_dataset(foreign, splits={"b": SplitSize(1, 0)}, config=TINY, workers=1)
    with pytest.raises(DataError, match="not a vadpipe synthetic dataset"):
        load_dataset(foreign)


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_anomalous_stretch_has_more_motion_than_the_rest_and_stays_in_the_i3d_view(kind):
    # 160x120: figures ~30 px tall. Moving share = pixels changing by more than noise.
    config = SynthConfig(width=160, height=120, n_figures=5)
    n, start, end = 72, 28, 56
    frames = np.stack(list(render_frames(n_frames=n, anomaly=Anomaly(kind, start, end), config=config, seed=11)))
    share = moving_share(frames)  # share[i] compares frame i and i+1
    inside = share[start : end - 1].mean()
    outside = np.r_[share[: start - 1], share[end + 4 :]].mean()  # a few frames after: braking
    normal = moving_share(np.stack(list(render_frames(n_frames=n, anomaly=None, config=config, seed=11)))).mean()
    assert inside > 1.3 * outside
    assert inside > 1.3 * normal

    # The extractor resizes the short side to 256 and keeps the centre 224 x 224: in this frame,
    # the centre 105 x 105. Motion outside it would be invisible to I3D.
    moving = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=3) > 12
    side = 120 * 224 / 256
    x0, y0 = round((160 - side) / 2), round((120 - side) / 2)
    in_view = moving[:, y0 : y0 + round(side), x0 : x0 + round(side)].sum()
    assert moving.sum() - in_view <= 0.02 * in_view


def test_sample_anomaly_stays_inside_and_respects_the_fraction():
    config = SynthConfig(anomaly_fraction=(0.05, 0.1))
    rng = np.random.default_rng(0)
    for n in (16, 100, 601):
        for _ in range(50):
            a = sample_anomaly(n, config=config, rng=rng)
            assert 0 <= a.start_frame < a.end_frame <= n
            assert max(1, round(0.05 * n)) <= a.end_frame - a.start_frame <= max(1, round(0.1 * n))
            assert a.kind in ANOMALY_KINDS


def test_invalid_settings_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="width must be an even integer"):
        SynthConfig(width=321)
    with pytest.raises(ConfigError, match="anomaly_fraction"):
        SynthConfig(anomaly_fraction=(0.5, 0.2))
    with pytest.raises(ConfigError, match="anomaly_kinds"):
        SynthConfig(anomaly_kinds=("explosion",))
    with pytest.raises(ConfigError, match="n_frames"):
        SynthConfig(n_frames=(40, 20))
    with pytest.raises(ConfigError, match="ends after the video"):
        render_video(tmp_path / "x.mp4", n_frames=20, anomaly=Anomaly("run", 10, 21), config=TINY)
    with pytest.raises(ConfigError, match="start_frame < end_frame"):
        Anomaly("run", 5, 5)
    with pytest.raises(ConfigError, match="at least one split"):
        make_dataset(tmp_path / "d", splits={}, config=TINY)
    with pytest.raises(ConfigError, match="split names"):
        make_dataset(tmp_path / "d", splits={"../x": SplitSize(1, 0)}, config=TINY)
    assert not (tmp_path / "x.mp4").exists()


def test_config_round_trips_through_json():
    config = SynthConfig(n_frames=300, anomaly_kinds=("fight", "run"))
    assert config.n_frames == (300, 300)
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_an_interrupted_generation_is_marked_incomplete_and_can_be_redone(tmp_path):
    root = tmp_path / "data"
    splits = {"train": SplitSize(normal=1, anomalous=2)}

    def stop_after_first(video):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_dataset(root, splits=splits, config=TINY, workers=1, on_video=stop_after_first)
    assert json.loads((root / "manifest.json").read_text())["complete"] is False
    with pytest.raises(DataError, match="incomplete"):
        load_dataset(root)
    killed_write = root / "train" / "anomalous" / ".synth_train_001_label_run.0123abcd.tmp.mp4"
    killed_write.write_bytes(b"half")

    ds = make_dataset(root, splits=splits, config=TINY, workers=1)
    assert load_dataset(root) == ds
    assert sorted(p.name for p in root.rglob("*.mp4")) == sorted(v.path.name for v in ds.videos)
    assert not list(root.rglob(".*"))
