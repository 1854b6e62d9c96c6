"""Random block views for training and the deterministic test-time subsampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from vadpipe.model.augment import chunk_start_indices, view_indices


@pytest.mark.parametrize("n_steps", range(1, 7))
def test_short_sequences_are_kept_whole(n_steps: int) -> None:
    views = view_indices(n_steps, n_views=2, rng=np.random.default_rng(0))
    assert views.tolist() == [list(range(n_steps))] * 2  # identical views: alignment term 0 (model/README.md §2, §5)


@pytest.mark.parametrize(("n_steps", "block_len"), [(7, 3), (8, 3), (9, 3), (100, 3), (9, 4), (23, 5)])
def test_one_row_per_block_in_order_and_tail_dropped(n_steps: int, block_len: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        views = view_indices(n_steps, n_views=2, block_len=block_len, rng=rng)
        n_blocks = n_steps // block_len
        assert views.shape == (2, n_blocks)
        assert (views // block_len == np.arange(n_blocks)).all()  # one index in each block, in order
        assert views.max() < n_blocks * block_len  # the T mod L tail never appears


def test_block_picks_are_uniform_and_the_views_independent() -> None:
    rng = np.random.default_rng(2)
    draws = np.stack([view_indices(30, n_views=2, rng=rng) for _ in range(3000)])  # (3000, 2, 10)
    offsets = draws % 3
    counts = np.bincount(offsets.ravel(), minlength=3)
    assert chisquare(counts).pvalue > 1e-3
    for block in (0, 9):  # each block on its own is uniform too
        assert chisquare(np.bincount(offsets[:, 0, block], minlength=3)).pvalue > 1e-3
    same = (offsets[:, 0] == offsets[:, 1]).mean()  # independent views agree 1/3 of the time
    assert abs(same - 1 / 3) < 0.02
    joint = np.bincount((offsets[:, 0, :] * 3 + offsets[:, 1, :]).ravel(), minlength=9)
    assert chisquare(joint).pvalue > 1e-3


def test_views_depend_only_on_the_generator() -> None:
    a = view_indices(50, n_views=2, rng=np.random.default_rng(7))
    b = view_indices(50, n_views=2, rng=np.random.default_rng(7))
    c = view_indices(50, n_views=2, rng=np.random.default_rng(8))
    assert (a == b).all() and not (a == c).all()
    assert view_indices(50, n_views=1, rng=np.random.default_rng(7)).shape == (1, 16)


def test_chunk_start_indices() -> None:
    assert chunk_start_indices(12).tolist() == [0, 3, 6, 9]
    assert chunk_start_indices(8).tolist() == [0, 3]
    assert chunk_start_indices(6).tolist() == list(range(6))  # every row when T <= 2L (postprocess/README.md §1)
    assert chunk_start_indices(1).tolist() == [0]
    assert chunk_start_indices(9, block_len=4).tolist() == [0, 4]


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        view_indices(0, n_views=2, rng=rng)
    with pytest.raises(ValueError, match="n_views must be >= 1"):
        view_indices(5, n_views=0, rng=rng)
    with pytest.raises(ValueError, match="block_len must be >= 1"):
        view_indices(5, n_views=1, block_len=0, rng=rng)


def test_phase_views_are_distinct_phase_shifted_subsequences() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        views = view_indices(11, n_views=2, block_len=3, rng=rng, mode="phase")  # 3 blocks, tail of 2 dropped
        phases = views[:, 0]
        assert phases[0] != phases[1]
        assert np.array_equal(views, phases[:, None] + np.array([0, 3, 6])[None, :])
        seen.add(tuple(phases))
    assert len(seen) == 6  # every ordered pair of distinct phases occurs
    assert view_indices(5, n_views=2, rng=rng, mode="phase").tolist() == [[0, 1, 2, 3, 4]] * 2  # T <= 2L: whole
    with pytest.raises(ValueError, match="mode must be one of"):
        view_indices(9, n_views=2, rng=rng, mode="blocks")
