"""The CSL-TAL loss on a tiny batch computed by hand, term by term (model/README.md §3)."""

from __future__ import annotations

import math

import pytest
import torch

from vadpipe.model.losses import LossConfig, csl_loss, top_k_mean

# B = 2 samples, K = 2 views. Sample 0 (anomalous) has T' = 3, sample 1 (normal) T' = 2 plus one
# padded step whose (garbage) attention must be ignored everywhere.
ATTENTION = torch.tensor(
    [
        [[0.50, 0.25, 0.75], [0.25, 0.25, 0.50]],
        [[1.00, 0.50, 0.90], [0.50, 0.50, 0.30]],
    ]
)
SCORES = torch.tensor([[0.5, 0.8], [0.2, 0.5]])
LABELS = torch.tensor([1.0, 0.0])
MASK = torch.tensor([[True, True, True], [True, True, False]])
N = 2 * 3 + 2 * 2  # every view's valid steps

# By hand:
SPARSITY = 1.5 + 1.0 + 1.5 + 1.0  # Σ|λ| per view, summed
SMOOTHNESS = (0.25**2 + 0.5**2) + (0 + 0.25**2) + 0.5**2 + 0  # Σ (λ_t - λ_t+1)² within each view
ALIGNMENT = (0.25**2 + 0 + 0.25**2) / 3 + (0.5**2 + 0) / 2  # per sample mean over t, summed
BCE = (-math.log(0.5) - math.log(0.8) - math.log(0.8) - math.log(0.5)) / 4  # mean over the 4 views


def _loss(**weights: float | str) -> dict[str, float]:
    return csl_loss(ATTENTION, SCORES, LABELS, MASK, config=LossConfig(**weights)).as_floats()


def test_each_term_by_hand_with_unit_weights() -> None:
    terms = _loss(w_sparsity=1.0, w_smooth=1.0, w_align=1.0)
    assert terms["bce"] == pytest.approx(BCE / N, rel=1e-6)
    assert terms["sparsity"] == pytest.approx(SPARSITY / N, rel=1e-6)
    assert terms["smoothness"] == pytest.approx(SMOOTHNESS / N, rel=1e-6)
    assert terms["alignment"] == pytest.approx(ALIGNMENT / N, rel=1e-6)
    assert terms["total"] == pytest.approx((BCE + SPARSITY + SMOOTHNESS + ALIGNMENT) / N, rel=1e-6)


def test_default_weights_are_the_authors_code() -> None:
    terms = _loss()
    assert terms["sparsity"] == pytest.approx(2e-3 * 5.0 / 10, rel=1e-6)
    assert terms["smoothness"] == pytest.approx(2e-8 * 0.625 / 10, rel=1e-6)
    assert terms["alignment"] == pytest.approx(0.5 * (0.125 / 3 + 0.125) / 10, rel=1e-6)
    assert terms["total"] == pytest.approx(0.04581454 + 1e-3 + 1.25e-9 + 0.00833333, rel=1e-6)
    paper = LossConfig.from_assignment("paper")
    assert (paper.w_sparsity, paper.w_smooth, paper.w_align) == (2e-8, 2e-3, 0.5)
    assert LossConfig.from_assignment("code") == LossConfig()
    assert LossConfig.from_assignment("paper", w_smooth=0.0).w_smooth == 0.0


def test_one_view_has_no_alignment_and_counts_each_step_once() -> None:
    terms = csl_loss(ATTENTION[:, :1], SCORES[:, :1], LABELS, MASK, config=LossConfig(w_sparsity=1.0)).as_floats()
    assert terms["alignment"] == 0
    assert terms["sparsity"] == pytest.approx((1.5 + 1.5) / 5, rel=1e-6)  # N = 3 + 2
    assert terms["bce"] == pytest.approx((-math.log(0.5) - math.log(0.8)) / 2 / 5, rel=1e-6)


def test_per_video_normalisation() -> None:
    terms = _loss(w_sparsity=1.0, normalize="video")
    # each sample's share is divided by B*K*T'_b = 12 and 8 instead of N = 10
    assert terms["sparsity"] == pytest.approx(2.5 / 12 + 2.5 / 8, rel=1e-6)
    bce_share = (-math.log(0.5) - math.log(0.8)) / 4
    assert terms["bce"] == pytest.approx(bce_share / 12 + bce_share / 8, rel=1e-6)
    equal = torch.ones(2, 3, dtype=torch.bool)  # with equal lengths both normalisations agree
    steps, video = (
        float(csl_loss(ATTENTION, SCORES, LABELS, equal, config=LossConfig(normalize=n)).total)
        for n in ("steps", "video")
    )
    assert video == pytest.approx(steps, rel=1e-6)


def test_bce_is_on_probabilities_with_the_log_clamp() -> None:
    terms = csl_loss(
        torch.ones(1, 1, 1),
        torch.zeros(1, 1),
        torch.ones(1),
        torch.ones(1, 1, dtype=torch.bool),
        config=LossConfig(w_sparsity=0.0),
    )
    assert float(terms.total) == pytest.approx(100.0)  # PyTorch clamps log(0) at -100 (model/README.md §3, §5)


def test_gradients_flow_to_attention_and_scores_but_not_through_padding() -> None:
    attention = ATTENTION.clone().requires_grad_()
    scores = SCORES.clone().requires_grad_()
    csl_loss(attention, scores, LABELS, MASK, config=LossConfig()).total.backward()
    assert (attention.grad[1, :, 2] == 0).all()
    assert attention.grad[0].abs().sum() > 0 and scores.grad.abs().min() > 0


def test_bad_shapes_and_weights() -> None:
    with pytest.raises(ValueError, match="K must be 1 or 2"):
        csl_loss(torch.rand(2, 3, 4), torch.rand(2, 3), LABELS, torch.ones(2, 4, dtype=torch.bool), config=LossConfig())
    with pytest.raises(ValueError, match="shape mismatch"):
        csl_loss(ATTENTION, SCORES[:, :1], LABELS, MASK, config=LossConfig())
    with pytest.raises(ValueError, match="w_align must be >= 0"):
        LossConfig(w_align=-1.0)
    with pytest.raises(ValueError, match="normalize must be one of"):
        LossConfig(normalize="mean")
    with pytest.raises(ValueError, match="assignment must be one of"):
        LossConfig.from_assignment("both")


# --- the top-k MIL term (vadpipe's default recipe) ---------------------------------------------

WTCAM = torch.tensor(
    [
        [[0.9, 0.1, 0.2], [0.3, 0.6, 0.4]],
        [[0.2, 0.1, 0.95], [0.05, 0.3, 0.7]],  # the 0.95 / 0.7 sit on the padded step: ignored
    ]
)


def test_top_k_mean_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.8], [0.5, 0.7, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    assert top_k_mean(scores, mask, fraction=0.5).tolist() == pytest.approx([(0.9 + 0.8) / 2, 0.7])
    assert top_k_mean(scores, mask, fraction=0.01).tolist() == pytest.approx([0.9, 0.7])  # k >= 1
    assert top_k_mean(scores, mask, fraction=1.0).tolist() == pytest.approx([0.5, 0.6])  # padding never counts


def test_mil_term_by_hand() -> None:
    config = LossConfig(w_sparsity=0.0, w_smooth=0.0, w_align=0.0, w_mil=2.0, mil_top_fraction=0.5)
    terms = csl_loss(ATTENTION, SCORES, LABELS, MASK, config=config, wtcam=WTCAM).as_floats()
    # k = floor(0.5 T') = 1 for both samples: the max of each view, BCE with the video label
    mil = (-math.log(0.9) - math.log(0.6) - math.log(1 - 0.2) - math.log(1 - 0.3)) / 4
    assert terms["mil"] == pytest.approx(2.0 * mil / N, rel=1e-6)
    assert terms["total"] == pytest.approx((BCE + 2.0 * mil) / N, rel=1e-6)
    assert _loss()["mil"] == 0.0  # off in the paper's configuration
    with pytest.raises(ValueError, match="needs the weighted T-CAM"):
        csl_loss(ATTENTION, SCORES, LABELS, MASK, config=config)
    with pytest.raises(ValueError, match="mil_top_fraction"):
        LossConfig(mil_top_fraction=0.0)


def test_mil_gradient_reaches_only_the_top_steps() -> None:
    wtcam = WTCAM.clone().requires_grad_()
    config = LossConfig(w_sparsity=0.0, w_smooth=0.0, w_align=0.0, w_mil=1.0, mil_top_fraction=0.5)
    csl_loss(ATTENTION, SCORES, LABELS, MASK, config=config, wtcam=wtcam).total.backward()
    nonzero = (wtcam.grad != 0).nonzero().tolist()
    assert nonzero == [[0, 0, 0], [0, 1, 1], [1, 0, 0], [1, 1, 1]]
    assert wtcam.grad[0, 0, 0] < 0 < wtcam.grad[1, 0, 0]  # raise the anomalous peak, lower the normal one


def test_view_scaling_once_divides_bce_and_mil_by_the_view_count_once() -> None:
    # the code (the paper recipe): the BCE is a mean over the B*K = 4 views, then divided by N = K * sum T'
    wt = torch.tensor([[[0.2, 0.9, 0.1], [0.6, 0.3, 0.0]], [[0.2, 0.1, 0.0], [0.1, 0.3, 0.0]]])
    terms = {
        s: csl_loss(
            ATTENTION,
            SCORES,
            LABELS,
            MASK,
            wtcam=wt,
            config=LossConfig(w_sparsity=1.0, w_mil=1.0, mil_top_fraction=0.5, view_scaling=s),
        ).as_floats()
        for s in ("code", "once")
    }
    sum_bce = -math.log(0.5) - math.log(0.8) - math.log(0.8) - math.log(0.5)  # the 4 views' BCE, summed
    sum_mil = -math.log(0.9) - math.log(0.6) - math.log(1 - 0.2) - math.log(1 - 0.3)
    assert terms["code"]["bce"] == pytest.approx(sum_bce / (2 * 2) / N, rel=1e-6)  # / (B*K) / (K*ΣT'): K twice
    assert terms["once"]["bce"] == pytest.approx(sum_bce / 2 / N, rel=1e-6)  # / B / (K*ΣT'): K once
    assert terms["once"]["mil"] == pytest.approx(sum_mil / 2 / N, rel=1e-6)
    assert terms["once"]["mil"] == pytest.approx(2 * terms["code"]["mil"], rel=1e-6)
    assert terms["once"]["sparsity"] == terms["code"]["sparsity"] == pytest.approx(SPARSITY / N, rel=1e-6)
    # per video: sample b's share is divided by B*K*T'_b; "once" leaves one factor K less on BCE
    video = {
        s: csl_loss(ATTENTION, SCORES, LABELS, MASK, config=LossConfig(normalize="video", view_scaling=s)).as_floats()[
            "bce"
        ]
        for s in ("code", "once")
    }
    share = (-math.log(0.5) - math.log(0.8)) / 2  # sample 0's two views over B = 2 (sample 1 is the same sum)
    assert video["once"] == pytest.approx(share / 12 + share / 8, rel=1e-6)
    assert video["once"] == pytest.approx(2 * video["code"], rel=1e-6)
    # one view: both scalings are the same loss
    one = [
        float(csl_loss(ATTENTION[:, :1], SCORES[:, :1], LABELS, MASK, config=LossConfig(view_scaling=s)).total)
        for s in ("code", "once")
    ]
    assert one[0] == one[1]
    with pytest.raises(ValueError, match="view_scaling must be one of"):
        LossConfig(view_scaling="twice")
