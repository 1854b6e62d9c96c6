"""Scoring a sequence with a model: the authors' subsampled rows and the full-rate phases
(postprocess/README.md §1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.scoring import csl_rows, phase_rows, score_sequence, score_sequences, score_video


@pytest.fixture(scope="module")
def model_and_dim() -> tuple[CSLTAL, int]:
    """The real network, narrower than I3D's 1024 so the tests stay fast."""
    torch.manual_seed(0)
    config = ModelConfig(feature_dim=64)
    return CSLTAL(config).eval(), config.feature_dim


def _features(n_rows: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_rows, dim)).astype(np.float32)


def _alone(model: CSLTAL, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One unpadded sequence, no mask: the reference the batched path must match."""
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x))[None])
    return out.attention[0].numpy(), out.tcam[0].numpy(), float(out.video_score[0])


def test_row_selections() -> None:
    assert csl_rows(12).tolist() == [0, 3, 6, 9]
    assert csl_rows(8).tolist() == [0, 3]  # the T mod 3 tail is dropped
    assert csl_rows(7, block_len=2).tolist() == [0, 2, 4]
    assert csl_rows(6).tolist() == list(range(6))  # all rows when T <= 6 (postprocess/README.md §1)
    assert csl_rows(6, parity_q11=True).tolist() == list(range(5))  # the authors' arange(T-1)
    assert csl_rows(1, parity_q11=True).tolist() == []
    assert [r.tolist() for r in phase_rows(7)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [r.tolist() for r in phase_rows(4)] == [[0, 1, 2, 3]]
    with pytest.raises(ConfigError, match="block_len must be an integer >= 1"):
        phase_rows(5, block_len=0)


@pytest.mark.parametrize("n_rows", [1, 2, 6, 7, 8, 9, 31])
def test_full_mode_scores_every_clip_exactly_once(model_and_dim, n_rows: int) -> None:
    model, dim = model_and_dim
    scores = score_sequence(model, _features(n_rows, dim, seed=n_rows))
    np.testing.assert_array_equal(scores.rows, np.arange(n_rows))
    for curve in (scores.attention, scores.tcam, scores.wtcam):
        assert curve.shape == (n_rows,)
        assert np.all((curve >= 0) & (curve <= 1))
    np.testing.assert_allclose(scores.wtcam, scores.attention * scores.tcam, rtol=1e-6)
    assert 0 <= scores.video_score <= 1


def test_full_mode_interleaves_the_three_phases(model_and_dim) -> None:
    model, dim = model_and_dim
    x = _features(20, dim, seed=1)
    scores = score_sequence(model, x, mode="full")
    video = []
    for p in range(3):
        att, tcam, v = _alone(model, x[p::3])
        np.testing.assert_allclose(scores.attention[p::3], att, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores.tcam[p::3], tcam, rtol=1e-5, atol=1e-6)
        video.append(v)
    assert scores.video_score == pytest.approx(np.mean(video), rel=1e-5)
    # The phases are scored separately: not what the full sequence gives in one go.
    whole_att, _, _ = _alone(model, x)
    assert not np.allclose(scores.attention, whole_att, atol=1e-4)


def test_csl_mode_is_the_subsampled_sequence(model_and_dim) -> None:
    model, dim = model_and_dim
    x = _features(14, dim, seed=2)
    scores = score_sequence(model, x, mode="csl")
    np.testing.assert_array_equal(scores.rows, [0, 3, 6, 9])
    att, tcam, video = _alone(model, x[[0, 3, 6, 9]])
    np.testing.assert_allclose(scores.attention, att, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.tcam, tcam, rtol=1e-5, atol=1e-6)
    assert scores.video_score == pytest.approx(video, rel=1e-5)


def test_short_sequences_are_scored_whole_in_both_modes(model_and_dim) -> None:
    model, dim = model_and_dim
    x = _features(5, dim, seed=3)
    att, _, video = _alone(model, x)
    for mode in ("full", "csl"):
        scores = score_sequence(model, x, mode=mode)
        np.testing.assert_allclose(scores.attention, att, rtol=1e-5, atol=1e-6)
        assert scores.video_score == pytest.approx(video, rel=1e-5)
    parity = score_sequence(model, x, mode="csl", parity_q11=True)
    np.testing.assert_array_equal(parity.rows, [0, 1, 2, 3])
    np.testing.assert_allclose(parity.attention, _alone(model, x[:4])[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="leaves no rows under parity_q11"):
        score_sequence(model, x[:1], mode="csl", parity_q11=True)


def test_batch_of_sequences_equals_one_at_a_time(model_and_dim) -> None:
    model, dim = model_and_dim
    xs = [_features(n, dim, seed=n) for n in (3, 17, 9, 40)]
    for mode in ("full", "csl"):
        together = score_sequences(model, xs, mode=mode)
        for x, got in zip(xs, together):
            alone = score_sequence(model, x, mode=mode)
            np.testing.assert_array_equal(got.rows, alone.rows)
            np.testing.assert_allclose(got.wtcam, alone.wtcam, rtol=1e-5, atol=1e-6)
            assert got.video_score == pytest.approx(alone.video_score, rel=1e-5)


def test_scoring_rejects_bad_input(model_and_dim) -> None:
    model, dim = model_and_dim
    with pytest.raises(DataError, match=r"no feature rows \(T = 0\)"):
        score_sequence(model, np.zeros((0, dim), np.float32))
    with pytest.raises(DataError, match=r"must be \(T, F\)"):
        score_sequence(model, np.zeros(dim, np.float32))
    bad = _features(4, dim)
    bad[2, 0] = np.nan
    with pytest.raises(DataError, match="1 feature rows hold NaN/inf"):
        score_sequence(model, bad)
    with pytest.raises(DataError, match="different feature widths"):
        score_sequences(model, [_features(4, dim), _features(4, dim + 1)])
    with pytest.raises(ConfigError, match="mode must be 'full' or 'csl'"):
        score_sequence(model, _features(4, dim), mode="all")
    with pytest.raises(ConfigError, match="parity_q11 applies only to mode='csl'"):
        score_sequence(model, _features(4, dim), parity_q11=True)
    assert score_sequences(model, []) == []


def test_a_video_averages_its_crops_weighted_tcams(model_and_dim) -> None:
    model, dim = model_and_dim
    crops = [_features(14, dim, seed=40 + c) for c in range(5)]
    video = score_video(model, crops)
    each = score_sequences(model, crops)
    np.testing.assert_array_equal(video.wtcam, np.mean([s.wtcam for s in each], axis=0))
    assert video.video_score == pytest.approx(np.mean([s.video_score for s in each]))
    # not the product of the averages: that pairs one crop's attention with another's T-CAM
    assert not np.allclose(video.wtcam, video.attention * video.tcam, rtol=1e-4)
    one = score_video(model, crops[:1])
    np.testing.assert_array_equal(one.wtcam, score_sequence(model, crops[0]).wtcam)  # one crop: its own curve
    csl = score_video(model, crops, mode="csl")
    assert len(csl.crops) == 5 and csl.rows.tolist() == [0, 3, 6, 9]
    with pytest.raises(DataError, match=r"equal lengths, got \[13, 14\] rows"):
        score_video(model, [crops[0], crops[1][:13]])
    with pytest.raises(DataError, match="at least one crop"):
        score_video(model, [])
