"""Training-time temporal augmentation: random one-row-per-block views of a sequence (model/README.md §2).

A view keeps one uniformly chosen row from each block ``[L*i, L*i + L)`` in temporal order and
drops the ``T mod L`` tail rows, so every view has length ``T // L``. Sequences with
``T <= 2L`` are returned whole (then the views are identical and their alignment term is 0),
exactly as the authors' ``RandomTemporalChunkCrop``. The original sequence is never a view.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VIEW_MODES", "view_indices", "chunk_start_indices", "phase_indices"]

VIEW_MODES = ("random", "phase")


def view_indices(
    n_steps: int, *, n_views: int, block_len: int = 3, rng: np.random.Generator, mode: str = "random"
) -> np.ndarray:
    """Row indices of ``n_views`` random views of a length-``n_steps`` sequence.

    ``mode="random"`` (the authors'): an independent row per block and per view.
    ``mode="phase"``: each view is one phase-shifted subsequence ``[φ, φ+L, φ+2L, ...]``, the
    views on different phases (when ``n_views <= L``): exactly the sub-sequences full-rate
    scoring interleaves, so the alignment loss makes the phases agree where detection needs it.

    Args:
        n_steps: T, the number of feature rows (>= 1).
        n_views: K, the number of views (2 with the alignment loss, 1 without).
        block_len: L, the block length (3 in the paper).
        rng: the source of randomness; the function draws from it and touches nothing else.

    Returns:
        (K, T') int64 array, sorted along each row; ``T' = T // L`` when ``T > 2L``, else ``T``.

    Example:
        >>> view_indices(7, n_views=2, rng=np.random.default_rng(0)).shape
        (2, 2)
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if block_len < 1:
        raise ValueError(f"block_len must be >= 1, got {block_len}")
    if mode not in VIEW_MODES:
        raise ValueError(f"mode must be one of {VIEW_MODES}, got {mode!r}")
    if n_steps <= 2 * block_len:
        return np.tile(np.arange(n_steps, dtype=np.int64), (n_views, 1))
    n_blocks = n_steps // block_len
    if mode == "phase":
        phases = (
            rng.permutation(block_len)[:n_views] if n_views <= block_len else rng.integers(0, block_len, size=n_views)
        )
        offsets = np.repeat(phases.astype(np.int64)[:, None], n_blocks, axis=1)
    else:
        offsets = rng.integers(0, block_len, size=(n_views, n_blocks), dtype=np.int64)
    return np.arange(n_blocks, dtype=np.int64) * block_len + offsets


def chunk_start_indices(n_steps: int, *, block_len: int = 3) -> np.ndarray:
    """The deterministic test-time counterpart: the first row of each block (postprocess/README.md §1).

    ``[0, L, 2L, ...]`` for ``T > 2L``; all ``T`` rows otherwise (the authors' code drops the last
    row there, postprocess/README.md §1, which empties a T=1 sequence; vadpipe keeps it).
    """
    if n_steps < 1 or block_len < 1:
        raise ValueError(f"n_steps and block_len must be >= 1, got {n_steps} and {block_len}")
    if n_steps <= 2 * block_len:
        return np.arange(n_steps, dtype=np.int64)
    return np.arange(n_steps // block_len, dtype=np.int64) * block_len


def phase_indices(n_steps: int, *, block_len: int = 3) -> list[np.ndarray]:
    """The rows of each phase-shifted sub-sequence ``[p::L]``, together every row once ("full"
    rate scoring and early stopping); sequences with ``T <= 2L`` form one whole phase, as in training.

    Example:
        >>> [r.tolist() for r in phase_indices(8)]
        [[0, 3, 6], [1, 4, 7], [2, 5]]
    """
    if n_steps <= 2 * block_len:
        return [np.arange(n_steps, dtype=np.int64)]
    return [np.arange(phase, n_steps, block_len, dtype=np.int64) for phase in range(block_len)]
