"""The outside-footage distance on controlled features: fit, threshold, storage, judgement, JSON.

The real-footage evidence (I3D features of synthetic and real videos) is in test_ood.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vadpipe.errors import CheckpointError, DataError
from vadpipe.model.ood import OOD_FILE, fit_distance, fit_run_distance, load_distance, save_distance
from vadpipe.postprocess.intervals import validate_document
from vadpipe.postprocess.ood import judge_video, outside_line

DIM = 32


def _videos(rng, n_videos, *, shift=0.0, clips=12, scale=None):
    scale = np.linspace(0.5, 2.0, DIM) if scale is None else scale
    return {
        f"v{rng.integers(1 << 30)}": [(rng.normal(size=(clips, DIM)) * scale + shift).astype(np.float32)]
        for _ in range(n_videos)
    }


def test_heldout_threshold_keeps_like_footage_in_and_marks_shifted_footage():
    rng = np.random.default_rng(0)
    distance = fit_distance(_videos(rng, 12), _videos(rng, 4))
    assert distance.threshold_from == "heldout" and distance.threshold_clips == 48
    assert distance.fit_videos == 12 and distance.fit_clips == 144
    new_like = [judge_video(distance, crops) for crops in _videos(rng, 10).values()]
    assert not any(j.outside for j in new_like)
    assert np.mean([j.share_outside for j in new_like]) < 0.1
    shifted = [judge_video(distance, crops) for crops in _videos(rng, 3, shift=1.5).values()]
    assert all(j.outside and j.share_outside > 0.9 for j in shifted)


def test_the_distance_sees_a_change_in_correlation_not_only_in_the_mean():
    rng = np.random.default_rng(1)
    mixing = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0]
    low_rank = np.r_[np.ones(4) * 3.0, np.ones(DIM - 4) * 0.1]

    def correlated(n, rotate):
        out = {}
        for i in range(n):
            x = rng.normal(size=(12, DIM)) * low_rank
            out[f"c{rotate}{i}"] = [(x @ (mixing if rotate else np.eye(DIM))).astype(np.float32)]
        return out

    distance = fit_distance(correlated(16, False), correlated(4, False))
    assert not judge_video(distance, correlated(1, False).popitem()[1]).outside
    # same per-feature means, same total variance, other directions
    assert judge_video(distance, correlated(1, True).popitem()[1]).outside


def test_without_heldout_videos_the_threshold_is_cross_fitted_and_not_in_sample():
    rng = np.random.default_rng(2)
    train = _videos(rng, 10, clips=6)
    crossed = fit_distance(train)
    assert crossed.threshold_from == "cross_fit" and crossed.threshold_videos == 10
    in_sample = max(crossed.clip_distances(c).max() for c in train.values())
    assert crossed.threshold > in_sample  # out-of-fold distances are larger than fitted ones
    assert not any(judge_video(crossed, c).outside for c in _videos(rng, 10, clips=6).values())
    with pytest.raises(DataError, match="at least 2 training videos"):
        fit_distance(dict([train.popitem()]))


def test_crops_are_averaged_and_shapes_are_checked():
    rng = np.random.default_rng(3)
    distance = fit_distance(_videos(rng, 6), _videos(rng, 2))
    a, b = rng.normal(size=(5, DIM)), rng.normal(size=(5, DIM))
    np.testing.assert_allclose(distance.clip_distances([a, b]), (distance.distances(a) + distance.distances(b)) / 2)
    with pytest.raises(DataError, match="32-d"):
        distance.distances(np.zeros((3, DIM + 1)))


def test_stored_and_loaded_distance_judges_alike(tmp_path):
    rng = np.random.default_rng(4)
    distance = fit_distance(_videos(rng, 8), _videos(rng, 3))
    save_distance(tmp_path / OOD_FILE, distance)
    loaded = load_distance(tmp_path)
    assert loaded.summary() == json.loads(json.dumps(distance.summary()))
    probe = rng.normal(size=(7, DIM)) * 2
    np.testing.assert_allclose(loaded.distances(probe), distance.distances(probe), rtol=1e-4)
    assert load_distance(tmp_path / "elsewhere") is None  # a run from before: cannot judge
    (tmp_path / OOD_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(CheckpointError, match="not a usable vadpipe outside-footage file"):
        load_distance(tmp_path)


def test_fit_run_distance_reads_the_run_config(tmp_path):
    from vadpipe.model.run import write_json

    rng = np.random.default_rng(5)
    feats = tmp_path / "feats"
    feats.mkdir()
    names = []
    for i in range(8):
        name = f"v{i}_label_{'A' if i % 2 else 'B1-0-0'}"
        np.save(feats / f"{name}__0.npy", rng.normal(size=(10, DIM)).astype(np.float32))
        names.append(name)
    run = tmp_path / "run"
    write_json(
        run / "config.json",
        {
            "schema_version": 1,
            "model": {},
            "data": {"path": str(feats), "labels_csv": None, "crops_requested": None, "videos": names[:6]},
            "calibration": {"heldout_videos": names[6:]},
        },
    )
    distance = fit_run_distance(run)
    assert (distance.fit_videos, distance.threshold_videos, distance.threshold_from) == (6, 2, "heldout")
    assert set(distance.threshold_video_shares) == set(names[6:])
    assert load_distance(run).threshold == pytest.approx(distance.threshold)


def test_the_document_carries_the_mark_and_old_documents_still_validate():
    rng = np.random.default_rng(6)
    distance = fit_distance(_videos(rng, 6), _videos(rng, 2))
    judged = judge_video(distance, [rng.normal(size=(2, DIM)) + 3])
    video = {
        "source": "a.mp4",
        "duration_s": 1.3,
        "fps": 25.0,
        "n_frames": 32,
        "clip_len": 16,
        "video_score": 0.5,
        "clips": [
            {"start_s": 0.0, "attention": 0.5, "tcam": 0.5, "wtcam": 0.25},
            {"start_s": 0.64, "attention": 0.5, "tcam": 0.5, "wtcam": 0.25},
        ],
        "intervals": [],
    }
    doc = {
        "schema_version": 1,
        "operating_point": {"threshold": 0.35, "low": 0.05, "high": 1.0, "min_duration_s": 0.0, "merge_gap_s": 0.0},
        "videos": [video],
    }
    validate_document(doc)  # written before the mark existed
    video["ood"] = json.loads(json.dumps(judged.to_dict()))
    validate_document(doc)
    assert video["ood"]["outside_training"] is True and video["ood"]["share_outside"] == 1.0
    video["ood"]["clip_distances"] = [1.0]
    with pytest.raises(DataError, match=r"videos\[0\]\.ood\.clip_distances has 1 values for 2 clips"):
        validate_document(doc)
    video["ood"]["outside_training"] = "yes"
    with pytest.raises(DataError, match="outside_training must be true or false"):
        validate_document(doc)
    line = outside_line("a.mp4", judged)
    assert "not valid" in line and "train again" in line and "100%" in line


def test_the_plot_of_a_video_outside_the_training_footage_shows_it(tmp_path):
    from vadpipe.postprocess.plot import plot_scores

    times = np.arange(100) / 25
    common = {
        "times_s": times,
        "curves": {"wtcam": 0.5 + 0.2 * np.sin(times)},
        "threshold": 0.35,
        "intervals": [(1.0, 2.0)],
        "title": "street.mp4",
    }
    plain = plot_scores(tmp_path / "plain.png", **common).read_bytes()
    marked = plot_scores(
        tmp_path / "marked.png",
        **common,
        outside=[(0.0, 3.2)],
        warning="street.mp4: 100% of its clips are outside the training footage",
    ).read_bytes()
    assert marked[:8] == b"\x89PNG\r\n\x1a\n" and marked != plain


def test_the_live_judge_turns_outside_when_the_window_does_and_back():
    from vadpipe.postprocess.ood import LiveJudge

    rng = np.random.default_rng(5)
    distance = fit_distance(_videos(rng, 12), _videos(rng, 4))
    judge = LiveJudge(distance, window=10, min_clips=4)
    like = np.concatenate(list(_videos(rng, 1, clips=12).values())[0])
    unlike = np.concatenate(list(_videos(rng, 1, clips=30, shift=2.0).values())[0])
    changes = [judge.push(np.stack([row, row])) for row in like]  # two identical crops per clip
    assert all(c is None for c in changes) and not judge.outside  # like footage: never a verdict change
    changes = [judge.push(row[None]) for row in unlike]
    turned = [k for k, c in enumerate(changes) if c is not None]
    assert len(turned) == 1 and changes[turned[0]].outside and judge.outside
    assert turned[0] < 10  # within one window of the change of scene
    back = [judge.push(row[None]) for row in like]
    flips = [c for c in back if c is not None]
    assert len(flips) == 1 and not flips[0].outside and not judge.outside
    assert judge.seen == 12 + 30 + 12 and judge.beyond >= 25
    with pytest.raises(DataError, match="window and min_clips must be >= 1"):
        LiveJudge(distance, window=0)
