"""Interpolation to frame rate and proposals from runs above the threshold (postprocess/README.md §2-§3)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vadpipe.errors import ConfigError, DataError
from vadpipe.postprocess.proposals import (
    Proposal,
    find_proposals,
    interpolate_to_frames,
    merge_proposals,
    paint_proposals,
)

# --- interpolate_to_frames ------------------------------------------------------------------


@pytest.mark.parametrize("n_clips", [2, 3, 7, 40])
@pytest.mark.parametrize("clip_len", [1, 4, 16])
def test_interpolation_length_and_corner_aligned_nodes(n_clips: int, clip_len: int) -> None:
    rng = np.random.default_rng(n_clips * 100 + clip_len)
    psi = rng.uniform(0.1, 0.9, n_clips)
    f = interpolate_to_frames(psi, clip_len=clip_len, low=0.0, high=1.0)
    assert f.shape == (clip_len * n_clips,)
    # Corner-aligned: output i samples input coordinate i (T'-1) / (clip_len T' - 1), so the
    # two ends are exactly the first and last values...
    assert f[0] == pytest.approx(psi[0], abs=1e-12)
    assert f[-1] == pytest.approx(psi[-1], abs=1e-12)
    # ...and wherever that coordinate is an integer k, the spline passes through psi[k].
    n_out = clip_len * n_clips
    for i in range(n_out):
        coord = i * (n_clips - 1) / (n_out - 1)
        if abs(coord - round(coord)) < 1e-9:
            assert f[i] == pytest.approx(psi[round(coord)], abs=1e-9)


def test_interpolation_is_scipy_zoom_then_clipping() -> None:
    psi = np.array([0.0, 0.02, 0.9, 1.0, 1.0, 0.3, 0.0, 0.6], dtype=np.float32)
    raw = scipy.ndimage.zoom(psi, 16, order=3)
    f = interpolate_to_frames(psi)
    assert f.dtype == np.float32  # the reference code's dtype, so ties are the same
    assert raw.min() < 0 and raw.max() > 1  # the spline really over/undershoots here
    expected = raw.copy()
    expected[expected < 0.05] = 0
    expected[expected > 1.0] = 1
    np.testing.assert_array_equal(f, expected)
    assert f.min() == 0.0 and f.max() == 1.0


def test_interpolation_custom_clip_levels() -> None:
    f = interpolate_to_frames(np.array([0.1, 0.5, 0.95]), clip_len=4, low=0.2, high=0.9)
    assert np.all((f == 0) | ((f >= 0.2) & (f <= 0.9)) | (f == 1))
    assert f[0] == 0 and f[-1] == 1


def test_single_clip_is_repeated() -> None:
    np.testing.assert_array_equal(interpolate_to_frames(np.array([0.4]), clip_len=16), np.full(16, 0.4))
    np.testing.assert_array_equal(interpolate_to_frames(np.array([0.01]), clip_len=3), np.zeros(3))
    assert interpolate_to_frames(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"clip_len": 0}, ConfigError, "clip_len must be an integer >= 1"),
        ({"clip_len": 2.5}, ConfigError, "clip_len must be an integer >= 1"),
        ({"low": 0.5, "high": 0.4}, ConfigError, "low must be <= high"),
    ],
)
def test_interpolation_rejects_bad_options(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        interpolate_to_frames(np.array([0.1, 0.2]), **kwargs)


def test_interpolation_rejects_bad_curves() -> None:
    with pytest.raises(DataError, match="must be 1-D"):
        interpolate_to_frames(np.zeros((2, 2)))
    with pytest.raises(DataError, match="NaN/inf"):
        interpolate_to_frames(np.array([0.1, np.nan]))


# --- find_proposals -------------------------------------------------------------------------


def test_no_run() -> None:
    assert find_proposals(np.array([0.0, 0.1, 0.35, 0.2])) == []
    assert find_proposals(np.zeros(0)) == []


def test_one_run_scored_by_its_mean() -> None:
    f = np.array([0.0, 0.1, 0.5, 0.9, 0.4, 0.2, 0.0])
    (p,) = find_proposals(f)
    assert (p.start, p.end) == (2, 5)
    assert p.score == pytest.approx((0.5 + 0.9 + 0.4) / 3)
    assert p.length == 3


def test_runs_touching_both_ends_and_all_runs_kept() -> None:
    f = np.array([0.8, 0.6, 0.1, 0.7, 0.2, 0.5, 0.9])
    props = find_proposals(f)
    assert [(p.start, p.end) for p in props] == [(0, 2), (3, 4), (5, 7)]
    assert [p.score for p in props] == pytest.approx([0.7, 0.7, 0.7])
    (whole,) = find_proposals(np.full(5, 0.6))
    assert (whole.start, whole.end, whole.score) == (0, 5, pytest.approx(0.6))


def test_value_equal_to_threshold_is_not_above_it() -> None:
    f = np.array([0.35, 0.36, 0.35, 0.34, 0.35])
    (p,) = find_proposals(f, threshold=0.35)
    assert (p.start, p.end) == (1, 2)
    assert find_proposals(np.full(4, 0.5), threshold=0.5) == []


def test_merge_gap_scores_the_whole_merged_span() -> None:
    f = np.array([0.0, 0.6, 0.8, 0.1, 0.2, 0.9, 0.0, 0.0, 0.0, 0.7])
    assert len(find_proposals(f, merge_gap=1)) == 3  # gap of 2 frames is not merged
    props = find_proposals(f, merge_gap=2)
    assert [(p.start, p.end) for p in props] == [(1, 6), (9, 10)]
    # Documented choice: the mean over every frame of the merged span, gap frames included.
    assert props[0].score == pytest.approx(np.mean([0.6, 0.8, 0.1, 0.2, 0.9]))
    merged_all = find_proposals(f, merge_gap=3)
    assert [(p.start, p.end) for p in merged_all] == [(1, 10)]
    assert merged_all[0].score == pytest.approx(f[1:10].mean())


def test_min_len_drops_short_runs_after_merging() -> None:
    f = np.array([0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9])
    assert [(p.start, p.end) for p in find_proposals(f, min_len=2)] == [(6, 9)]
    # Merged first: [0, 3) has length 3 and survives min_len=3.
    props = find_proposals(f, min_len=3, merge_gap=1)
    assert [(p.start, p.end) for p in props] == [(0, 3), (6, 9)]
    assert find_proposals(f, min_len=4) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_len": -1}, "min_len must be an integer >= 0"),
        ({"merge_gap": 1.5}, "merge_gap must be an integer >= 0"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
    ],
)
def test_find_proposals_rejects_bad_options(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        find_proposals(np.array([0.5]), **kwargs)


def test_merge_proposals_with_a_custom_rule() -> None:
    f = np.array([0.9, 0.1, 0.9, 0.1, 0.9])
    props = find_proposals(f)
    merged = merge_proposals(props, f, should_merge=lambda a, b: b.start == 2)
    assert merged == [Proposal(0, 3, pytest.approx(f[0:3].mean())), Proposal(4, 5, 0.9)]


def test_paint_proposals() -> None:
    q = paint_proposals([Proposal(1, 3, 0.5), Proposal(4, 5, 0.9)], 6)
    np.testing.assert_array_equal(q, [0, 0.5, 0.5, 0, 0.9, 0])
    with pytest.raises(DataError, match="outside a curve of 4 frames"):
        paint_proposals([Proposal(2, 5, 0.5)], 4)


@settings(max_examples=150, deadline=None)
@given(
    f=arrays(np.float64, st.integers(0, 60), elements=st.sampled_from([0.0, 0.2, 0.35, 0.5, 0.9])),
    threshold=st.sampled_from([0.0, 0.35, 0.5]),
    min_len=st.integers(0, 4),
    merge_gap=st.integers(0, 4),
)
def test_find_proposals_properties(f, threshold, min_len, merge_gap) -> None:
    props = find_proposals(f, threshold=threshold, min_len=min_len, merge_gap=merge_gap)
    previous_end = -1
    for p in props:
        assert 0 <= p.start < p.end <= len(f)  # inside
        assert p.start > previous_end  # sorted, disjoint, never touching
        previous_end = p.end
        assert p.length >= min_len
        assert f[p.start] > threshold and f[p.end - 1] > threshold  # ends are above threshold
        assert p.score == pytest.approx(f[p.start : p.end].mean())
    above = f > threshold
    covered = paint_proposals([Proposal(p.start, p.end, 1.0) for p in props], len(f)) > 0
    for p in props:  # gaps inside a merged proposal are at most merge_gap frames long
        labels, n = scipy.ndimage.label(~above[p.start : p.end])
        assert n == 0 or np.bincount(labels)[1:].max() <= merge_gap
    if min_len == 0:
        # Nothing dropped: every frame above the threshold is covered, and neighbours are
        # further apart than merge_gap (else they would have been merged).
        assert np.all(covered[above])
        assert all(b.start - a.end > merge_gap for a, b in zip(props, props[1:]))
        if merge_gap == 0:
            np.testing.assert_array_equal(covered, above)


def test_a_proposal_score_stays_inside_its_frames_range_despite_rounding():
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004, so the plain mean is a step above every frame
    assert np.full(3, 0.1).mean() > 0.1
    (prop,) = find_proposals(np.full(3, 0.1), threshold=0.05)
    assert prop.score == 0.1
    (merged,) = find_proposals(np.array([0.1, 0.1, 0.0, 0.1]), threshold=0.05, merge_gap=1)
    assert 0.0 <= merged.score <= 0.1
