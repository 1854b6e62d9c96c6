"""Run a trained model over one video's feature rows and get per-clip scores
(postprocess/README.md §1).

The model was trained on views that keep one row per block of ``block_len`` = 3 rows
(model/README.md §2), and its video feature is an un-normalised *sum* over time
(model/README.md §1 item 3), so feeding it a full-rate sequence would triple the classifier
input. Two ways to score a sequence:

* ``mode="csl"``: the authors' test path (postprocess/README.md §1): rows ``0, 3, 6, ...``
  only, the ``T mod 3`` tail dropped; about one clip in three gets a score.
* ``mode="full"``: the three phase-shifted sub-sequences ``X[0::3], X[1::3], X[2::3]`` are
  scored separately (one padded, masked forward) and interleaved back, so every clip gets
  exactly one score, each from a sequence shaped like a training view (postprocess/README.md
  §1 and §6).

Sequences with ``T <= 2 * block_len`` rows are scored whole in both modes, as training saw them
unchanged (model/README.md §2; for ``csl`` this fixes the authors' short-sequence drop,
postprocess/README.md §1).

A *video* is scored by `score_video`, the one definition detect, evaluate, calibration, early
stopping and live scoring share: each crop's weighted T-CAM, then the mean over crops. It lives
with the model (it needs only the network and `vadpipe.model.augment`), so early stopping calls
it directly and every later stage imports it from here.

`clip_frame_labels` paints annotated frame intervals onto the clips the scores belong to: the
truth that validation during training and the evaluation both score against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.augment import chunk_start_indices, phase_indices

__all__ = [
    "ModelOutputLike",
    "SequenceModel",
    "ClipScores",
    "VideoScores",
    "ScoringMode",
    "csl_rows",
    "phase_rows",
    "score_sequence",
    "score_sequences",
    "combine_crops",
    "score_video",
    "clip_frame_labels",
]

ScoringMode = Literal["full", "csl"]


class ModelOutputLike(Protocol):
    """What a forward returns (`vadpipe.model.net.ModelOutput` satisfies it)."""

    @property
    def attention(self) -> torch.Tensor: ...  # (B, T) in [0, 1], 0 on padded steps

    @property
    def video_score(self) -> torch.Tensor: ...  # (B,)

    @property
    def tcam(self) -> torch.Tensor: ...  # (B, T)


class SequenceModel(Protocol):
    """The one model call scoring needs: ``model(x (B, T, F), mask (B, T) bool)``."""

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> ModelOutputLike: ...


@dataclass(frozen=True, eq=False)
class ClipScores:
    """Per-clip scores of one sequence.

    Attributes:
        attention: (n,) float32 attention λ in [0, 1].
        tcam: (n,) float32 T-CAM a = g(x_t).
        wtcam: (n,) float32 weighted T-CAM ψ = λ·a, the curve proposals are made from.
        video_score: the classifier's video-level probability (mean over phases in "full").
        rows: (n,) int64 feature rows the scores belong to: ``arange(T)`` in "full" mode,
            the subsampled rows in "csl" mode.
    """

    attention: np.ndarray
    tcam: np.ndarray
    wtcam: np.ndarray
    video_score: float
    rows: np.ndarray


def _check_block_len(block_len: int) -> None:
    if isinstance(block_len, bool) or not isinstance(block_len, (int, np.integer)) or block_len < 1:
        raise ConfigError(f"block_len must be an integer >= 1, got {block_len!r}")


def csl_rows(n_rows: int, *, block_len: int = 3, parity_q11: bool = False) -> np.ndarray:
    """Rows the authors' test loader keeps: the first of each full block of ``block_len``
    (`vadpipe.model.augment.chunk_start_indices`, all rows when ``n_rows <= 2 * block_len``).

    ``parity_q11=True`` reproduces the authors' ``arange(n_rows - 1)`` for short sequences
    instead (drops the last row; empty when ``n_rows == 1``).

    Example:
        >>> csl_rows(10).tolist(), csl_rows(5).tolist(), csl_rows(5, parity_q11=True).tolist()
        ([0, 3, 6], [0, 1, 2, 3, 4], [0, 1, 2, 3])
    """
    _check_block_len(block_len)
    if parity_q11 and n_rows <= 2 * block_len:
        return np.arange(n_rows - 1, dtype=np.int64)
    return chunk_start_indices(n_rows, block_len=block_len)


def phase_rows(n_rows: int, *, block_len: int = 3) -> list[np.ndarray]:
    """Row indices of the phase-shifted sub-sequences ``[p::block_len]`` ("full" mode).

    Together they cover every row exactly once. Short sequences (``n_rows <= 2 * block_len``)
    form a single whole-sequence phase, as in training.

    Example:
        >>> [r.tolist() for r in phase_rows(8)]
        [[0, 3, 6], [1, 4, 7], [2, 5]]
    """
    _check_block_len(block_len)
    return phase_indices(n_rows, block_len=block_len)


def _as_features(features: np.ndarray, index: int) -> np.ndarray:
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise DataError(f"sequence {index}: features must be (T, F), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"sequence {index}: no feature rows (T = 0), nothing to score")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise DataError(f"sequence {index}: {bad} feature rows hold NaN/inf values")
    return arr


def _model_device_dtype(model: SequenceModel) -> tuple[torch.device, torch.dtype]:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for p in parameters():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def score_sequences(
    model: SequenceModel,
    sequences: Sequence[np.ndarray],
    *,
    mode: ScoringMode = "full",
    block_len: int = 3,
    parity_q11: bool = False,
) -> list[ClipScores]:
    """Score several sequences (e.g. the crops of one video) through one padded forward.

    Every sub-sequence the mode asks for (three phases per sequence in "full", one in "csl")
    becomes one row of a right-padded batch with a mask; the model must give padded steps
    attention 0 and leave them out of its sum (the model contract). The model is used as
    given: pass it in eval mode (``load_run`` does).

    Args:
        model: a callable ``model(x (B, T, F), mask (B, T) bool)`` returning attention,
            video_score and tcam, e.g. `vadpipe.model.net.CSLTAL`.
        sequences: (T_i, F) feature arrays, T_i >= 1.
        mode: "full" (one score per row) or "csl" (the authors' subsampled rows).
        block_len: the training block length L (3 in the paper).
        parity_q11: "csl" only: reproduce the authors' dropped last row for T <= 2L.

    Returns:
        One `ClipScores` per sequence, in order.
    """
    if mode not in ("full", "csl"):
        raise ConfigError(f"mode must be 'full' or 'csl', got {mode!r}")
    if parity_q11 and mode != "csl":
        raise ConfigError("parity_q11 applies only to mode='csl'")
    arrays = [_as_features(s, i) for i, s in enumerate(sequences)]
    if not arrays:
        return []
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise DataError(f"sequences have different feature widths {sorted(widths)}")

    plans: list[list[np.ndarray]] = []
    for i, a in enumerate(arrays):
        if mode == "csl":
            rows = csl_rows(len(a), block_len=block_len, parity_q11=parity_q11)
            if rows.size == 0:
                raise DataError(
                    f"sequence {i}: T = {len(a)} leaves no rows under parity_q11 "
                    "(the authors' code crashes here); drop parity_q11 to score it"
                )
            plans.append([rows])
        else:
            plans.append(phase_rows(len(a), block_len=block_len))

    jobs = [(i, rows) for i, plan in enumerate(plans) for rows in plan]
    max_len = max(len(rows) for _, rows in jobs)
    x = np.zeros((len(jobs), max_len, widths.pop()), dtype=np.float32)
    mask = np.zeros((len(jobs), max_len), dtype=bool)
    for b, (i, rows) in enumerate(jobs):
        x[b, : len(rows)] = arrays[i][rows]
        mask[b, : len(rows)] = True

    device, dtype = _model_device_dtype(model)
    # An ensemble (vadpipe.model.ensemble) is scored member by member on the same batch; each
    # member's weighted T-CAM λ_m·a_m is formed first and the members' curves are averaged.
    members = list(getattr(model, "members", None) or [model])
    attention = np.zeros((len(members), len(jobs), max_len), dtype=np.float32)
    tcam = np.zeros_like(attention)
    video = np.zeros((len(members), len(jobs)), dtype=np.float32)
    with torch.inference_mode():
        xt, mt = torch.from_numpy(x).to(device=device, dtype=dtype), torch.from_numpy(mask).to(device)
        for m, member in enumerate(members):
            out = member(xt, mt)
            attention[m] = out.attention.float().cpu().numpy().reshape(len(jobs), max_len)
            tcam[m] = out.tcam.float().cpu().numpy().reshape(len(jobs), max_len)
            video[m] = out.video_score.float().cpu().numpy().reshape(len(jobs))

    results: list[ClipScores] = []
    b = 0
    for plan in plans:
        rows = np.concatenate(plan)
        order = np.argsort(rows, kind="stable")
        att = np.stack(
            [
                np.concatenate([attention[m, b + k, : len(r)] for k, r in enumerate(plan)])[order]
                for m in range(len(members))
            ]
        )
        tc = np.stack(
            [np.concatenate([tcam[m, b + k, : len(r)] for k, r in enumerate(plan)])[order] for m in range(len(members))]
        )
        # Mean over phases: each phase is a full view of the video, none is privileged.
        score = float(video[:, b : b + len(plan)].mean(axis=1).mean())
        b += len(plan)
        if len(members) == 1:
            results.append(ClipScores(att[0], tc[0], att[0] * tc[0], score, rows[order]))
        else:
            results.append(ClipScores(att.mean(axis=0), tc.mean(axis=0), (att * tc).mean(axis=0), score, rows[order]))
    return results


def score_sequence(
    model: SequenceModel,
    features: np.ndarray,
    *,
    mode: ScoringMode = "full",
    block_len: int = 3,
    parity_q11: bool = False,
) -> ClipScores:
    """Score one (T, F) feature sequence; see `score_sequences` for the arguments.

    Example:
        >>> scores = score_sequence(run.model, np.load("clip__0.npy"))  # doctest: +SKIP
        >>> scores.wtcam.shape  # one weighted T-CAM value per clip  # doctest: +SKIP
        (T,)
    """
    return score_sequences(model, [features], mode=mode, block_len=block_len, parity_q11=parity_q11)[0]


@dataclass(frozen=True, eq=False)
class VideoScores:
    """Per-clip scores of one video, its crops averaged.

    Attributes:
        wtcam: (n,) float32 the video's curve: the mean over crops of each crop's weighted
            T-CAM λ·a. Intervals, thresholds, metrics and early stopping all read this one.
        attention: (n,) float32 mean over crops of λ (shown beside the curve, not multiplied).
        tcam: (n,) float32 mean over crops of a (likewise).
        video_score: mean over crops of each crop's video probability.
        rows: (n,) int64 the feature rows the scores belong to (equal for every crop).
        crops: each crop's own scores, in order (the authors' protocol scores them apart).
    """

    wtcam: np.ndarray
    attention: np.ndarray
    tcam: np.ndarray
    video_score: float
    rows: np.ndarray
    crops: tuple[ClipScores, ...]


def combine_crops(
    attention: np.ndarray, tcam: np.ndarray, wtcam: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crops' per-clip scores -> the video's: (n_crops, T) attention and T-CAM to (T,) each.

    The one crop rule (see `score_video` for why): the curve is the mean over crops of each
    crop's weighted T-CAM λ_c·a_c; attention and T-CAM are averaged beside it. Offline scoring
    and live scoring (`vadpipe.postprocess.online`) both combine crops here. ``wtcam`` gives
    each crop's weighted T-CAM when it is not its attention times its T-CAM (an ensemble's
    crop curve is the mean of its members' λ_m·a_m); default λ_c·a_c.

    Returns:
        (attention, tcam, wtcam), each (T,) float32.
    """
    att = np.asarray(attention, dtype=np.float32)
    tc = np.asarray(tcam, dtype=np.float32)
    if att.ndim != 2 or att.shape != tc.shape:
        raise DataError(f"attention and tcam must both be (n_crops, T), got {att.shape} and {tc.shape}")
    weighted = att * tc if wtcam is None else np.asarray(wtcam, dtype=np.float32)
    if weighted.shape != att.shape:
        raise DataError(f"wtcam must be (n_crops, T) like the attention {att.shape}, got {weighted.shape}")
    return (
        att.mean(axis=0).astype(np.float32, copy=False),
        tc.mean(axis=0).astype(np.float32, copy=False),
        weighted.mean(axis=0).astype(np.float32, copy=False),
    )


def score_video(
    model: SequenceModel,
    crops: Sequence[np.ndarray],
    *,
    mode: ScoringMode = "full",
    block_len: int = 3,
    parity_q11: bool = False,
) -> VideoScores:
    """Score one video given the (T, F) features of each of its crops (one array for a centre crop).

    The crops' *scores* are averaged: each crop's weighted T-CAM ψ_c = λ_c·a_c, then
    ψ = mean_c ψ_c, and the video score is the mean of the crops' video scores. That is the
    XD-Violence convention (XDVioDet, RTFM: the five crops' per-clip scores are averaged, and the
    standard protocol of postprocess/README.md §6 averages over crops the curve it thresholds).
    It is also the only choice under which a crop is an independent view of the video: the product
    of crop-averaged λ and a, mean(λ)·mean(a), pairs one crop's attention with another's T-CAM
    and differs from mean(λ·a) as soon as the crops disagree. With one crop both are the same.

    Args: see `score_sequences`; every crop must have the same number of rows.

    Raises:
        DataError: no crops, or crops of different lengths.
    """
    if not crops:
        raise DataError("a video needs at least one crop of features to score")
    scores = score_sequences(model, crops, mode=mode, block_len=block_len, parity_q11=parity_q11)
    rows = scores[0].rows
    if any(not np.array_equal(s.rows, rows) for s in scores[1:]):
        lengths = sorted({len(np.asarray(c)) for c in crops})
        raise DataError(f"the crops of one video must have equal lengths, got {lengths} rows")

    attention, tcam, wtcam = combine_crops(
        np.stack([s.attention for s in scores]), np.stack([s.tcam for s in scores]), np.stack([s.wtcam for s in scores])
    )
    return VideoScores(
        wtcam=wtcam,
        attention=attention,
        tcam=tcam,
        video_score=float(np.mean([s.video_score for s in scores])),
        rows=rows,
        crops=tuple(scores),
    )


def clip_frame_labels(intervals: Sequence[tuple[int, int]], *, start_frames: np.ndarray, clip_len: int) -> np.ndarray:
    """Frame labels of every clip: ``out[k, j] = 1`` if frame ``start_frames[k] + j`` lies in
    an annotated half-open interval ``[s, e)`` (model/README.md §8, postprocess/README.md §6).

    For XD-Violence features (``start_frames = 16 k``) ``out.ravel()`` is XDVioDet's ``gt.npy``
    slice of the video (postprocess/README.md §6: zeros(16 T), ``[s, e)`` set, clipped to the
    horizon) and ``out.any(1)`` its ``segment_labels.txt`` entry (model/README.md §8).

    Returns:
        (T, clip_len) uint8.
    """
    starts = np.asarray(start_frames, dtype=np.int64).ravel()
    if starts.size and starts.min() < 0:
        raise DataError("clip start frames must be >= 0")
    if clip_len < 1:
        raise ConfigError(f"clip_len must be >= 1, got {clip_len}")
    horizon = int(starts.max()) + clip_len if starts.size else 0
    frame = np.zeros(horizon, dtype=np.uint8)
    for s, e in intervals:
        if e < s:
            raise DataError(f"annotation interval [{s}, {e}) ends before it starts")
        frame[max(s, 0) : min(e, horizon)] = 1
    return frame[starts[:, None] + np.arange(clip_len)]
