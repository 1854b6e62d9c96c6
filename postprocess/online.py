"""Score feature rows one clip at a time, as they arrive, with the same numbers as offline scoring.

Offline full-rate scoring (`vadpipe.model.scoring`, ``mode="full"``) runs the model on the
three phase-shifted sub-sequences ``X[p::L]`` and interleaves them back. Every per-clip output
only looks back: the masked conv of row ``t`` sees rows ``t - L*j`` for ``j = 0 .. k//2`` of its
own phase (zeros before the start), attention is a per-step head on the conv output and the
T-CAM is the classifier on the raw row. So the scores of clip ``t`` are fixed the moment row
``t`` exists, and `OnlineScorer` computes them by running the *same model forward* on the few
rows of that context window (the last output of a right-aligned window equals the full
sequence's output there, zero padding included).

Two places where offline scoring needs the whole sequence, and what this module does instead:

* a sequence of ``T <= 2L`` rows is scored offline as one whole phase (as training saw short
  videos). A live stream cannot know it will stay that short, so clips are scored with the
  phase rule from the first one; `SegmentHistory.final_scores` re-scores a segment that ended
  with ``T <= 2L`` rows the offline way, so the summary of a finished stream is detect's.
* the video score is ``g(sum_t λ_t x_t)`` over the whole video (mean over phases). On an
  endless stream it is taken over a trailing window of the last ``window`` clips
  (`OnlineScorer.window_video_score`); for a finished stream shorter than the window it is
  exactly the offline video score.

Several crops per clip are scored side by side (one row each) and combined by
`vadpipe.model.scoring.combine_crops`, `score_video`'s rule (the mean of the crops' weighted T-CAMs).
An ensemble run (`vadpipe.model.ensemble`) is scored member by member on the same window, and a
crop's weighted T-CAM is the mean of the members' λ_m·a_m, as `score_sequences` forms it offline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.scoring import ClipScores, SequenceModel, combine_crops, score_sequences

__all__ = ["OnlineClipScore", "OnlineScorer", "SegmentHistory"]


@dataclass(frozen=True)
class OnlineClipScore:
    """Scores of one clip: ``row`` is its index in the stream's sequence; per-crop arrays (n_crops,)
    and the crop-combined values the events are cut from."""

    row: int
    attention_crops: np.ndarray
    tcam_crops: np.ndarray
    wtcam_crops: np.ndarray
    attention: float
    tcam: float
    wtcam: float


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


class OnlineScorer:
    """Incremental full-rate scorer of one stream (one camera segment).

    Args:
        model: the run's model (`vadpipe.model.net.CSLTAL` or `vadpipe.model.ensemble.Ensemble`,
            eval mode).
        block_len: the training block length L (phase count).
        window: clips in the trailing window of `window_video_score` (the live video gate).
    """

    def __init__(self, model, *, block_len: int = 3, window: int = 90) -> None:
        if isinstance(block_len, bool) or not isinstance(block_len, int) or block_len < 1:
            raise ConfigError(f"block_len must be an integer >= 1, got {block_len!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an integer >= 1 (clips), got {window!r}")
        self.model = model
        self.members = list(getattr(model, "members", None) or [model])
        self.block_len = block_len
        self.window = window
        self.context = model.config.kernel_size // 2  # earlier rows of the same phase the conv sees
        self._recent: deque[np.ndarray] = deque(maxlen=self.context * block_len)
        self._weighted: deque[tuple[int, np.ndarray]] = deque(maxlen=window)  # (phase, λ_m·x (M, C, F))
        self._totals: dict[int, np.ndarray] = {}  # phase -> sum of λ_m·x over the whole segment
        self._device, self._dtype = _model_device_dtype(model)
        self.rows = 0

    def push(self, features: np.ndarray) -> OnlineClipScore:
        """Score the next clip from its (n_crops, F) feature rows (one per crop)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.model.config.feature_dim:
            raise DataError(f"clip features must be (n_crops, {self.model.config.feature_dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise DataError(f"clip {self.rows}: feature rows hold NaN/inf values")
        t = self.rows
        L = self.block_len
        # the rows t - L*j (j = context .. 0) that exist, oldest first
        back = [
            self._recent[len(self._recent) - L * j] for j in range(self.context, 0, -1) if L * j <= len(self._recent)
        ]
        window = np.stack(back + [x], axis=1)  # (C, n, F)
        with torch.inference_mode():
            xt = torch.from_numpy(window).to(self._device, self._dtype)
            outs = [member(xt) for member in self.members]
            att = np.stack([o.attention[:, -1].float().cpu().numpy() for o in outs])  # (M, C)
            tcam = np.stack([o.tcam[:, -1].float().cpu().numpy() for o in outs])
        self._recent.append(x)
        weighted = att[:, :, None] * x  # (M, C, F)
        self._weighted.append((t % L, weighted))
        self._totals[t % L] = self._totals[t % L] + weighted if t % L in self._totals else weighted.copy()
        self.rows += 1
        if len(self.members) == 1:
            att_c, tcam_c, wtcam_c = att[0], tcam[0], att[0] * tcam[0]
        else:
            att_c, tcam_c, wtcam_c = att.mean(axis=0), tcam.mean(axis=0), (att * tcam).mean(axis=0)
        a, c, w = combine_crops(att_c[:, None], tcam_c[:, None], wtcam_c[:, None])
        return OnlineClipScore(t, att_c, tcam_c, wtcam_c, float(a[0]), float(c[0]), float(w[0]))

    def window_video_score(self) -> float:
        """The video score over the last ``window`` clips: per phase ``g(sum λ_t x_t)``, averaged over
        the phases present, the crops and an ensemble's members (offline's definition, restricted
        to the window).
        This is the live video gate."""
        pooled: dict[int, np.ndarray] = {}
        for phase, wx in self._weighted:
            pooled[phase] = pooled[phase] + wx if phase in pooled else wx.copy()
        return self._video_score(pooled)

    def total_video_score(self) -> float:
        """The video score of everything pushed so far (offline's, for segments longer than 2L)."""
        return self._video_score(self._totals)

    def _video_score(self, pooled: dict[int, np.ndarray]) -> float:
        if not pooled:
            return 0.0
        x = torch.from_numpy(np.stack(list(pooled.values()))).to(self._device, self._dtype)  # (P, M, C, F)
        with torch.inference_mode():
            scores = [
                torch.sigmoid(member.classifier(x[:, m])).float().cpu().numpy() for m, member in enumerate(self.members)
            ]
        return float(np.mean(scores))


class SegmentHistory:
    """What a finished segment needs to be summarised exactly as ``detect`` would: per-clip scores
    per crop, and the first ``2L`` rows of features (to re-score a segment that stayed that short).

    Bounded by ``max_clips``; past it the history is dropped and `complete` turns False."""

    def __init__(self, *, block_len: int = 3, max_clips: int = 50_000) -> None:
        self.block_len = block_len
        self.max_clips = max_clips
        self.attention: list[np.ndarray] = []
        self.tcam: list[np.ndarray] = []
        self.wtcam: list[np.ndarray] = []
        self.start_frames: list[int] = []
        self._head: list[np.ndarray] = []
        self.complete = True

    def add(self, score: OnlineClipScore, features: np.ndarray, start_frame: int) -> None:
        if not self.complete:
            return
        if len(self.attention) >= self.max_clips:
            self.complete = False
            for kept in (self.attention, self.tcam, self.wtcam, self.start_frames, self._head):
                kept.clear()
            return
        self.attention.append(score.attention_crops)
        self.tcam.append(score.tcam_crops)
        self.wtcam.append(score.wtcam_crops)
        self.start_frames.append(int(start_frame))
        if len(self._head) < 2 * self.block_len:
            self._head.append(np.asarray(features, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.attention)

    def final_scores(self, model: SequenceModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n_crops, T) attention, T-CAM and weighted T-CAM of the whole segment, as offline
        full-rate scoring gives them (the arguments of `combine_crops`)."""
        if len(self.attention) <= 2 * self.block_len:
            crops = np.stack(self._head, axis=1)  # (C, T, F)
            scored: list[ClipScores] = score_sequences(model, list(crops), mode="full", block_len=self.block_len)
            return tuple(np.stack([getattr(s, name) for s in scored]) for name in ("attention", "tcam", "wtcam"))
        return np.stack(self.attention, axis=1), np.stack(self.tcam, axis=1), np.stack(self.wtcam, axis=1)

    def final_video_score(self, model: SequenceModel, scorer: OnlineScorer) -> float:
        """The offline video score of the whole segment (re-scored from the head rows when short)."""
        if len(self.attention) <= 2 * self.block_len:
            crops = np.stack(self._head, axis=1)
            scored = score_sequences(model, list(crops), mode="full", block_len=self.block_len)
            return float(np.mean([s.video_score for s in scored]))
        return scorer.total_video_score()
