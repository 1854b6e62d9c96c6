"""The CSL-TAL network: sizes, the masked causal conv, padding/mask semantics, heads and T-CAM."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vadpipe.model.net import CSLTAL, MaskedCausalConv1d, ModelConfig


def _model(dim: int = 16, attention: str = "mlp", seed: int = 0) -> CSLTAL:
    torch.manual_seed(seed)
    return CSLTAL(ModelConfig(attention=attention, feature_dim=dim))


def test_parameter_counts_match_the_original_code() -> None:
    # model/README.md §1: conv 5,243,904 + attention MLP 1,312,257 + classifier 525,313
    assert CSLTAL(ModelConfig()).num_parameters() == 7_081_474
    assert CSLTAL(ModelConfig(attention="gated")).num_parameters() == 6_294_274


def test_packed_conv_equals_the_authors_masked_conv() -> None:
    torch.manual_seed(0)
    conv = MaskedCausalConv1d(8, 5)
    lengths = [1, 2, 5, 9]
    seqs = [torch.randn(n, 8) for n in lengths]
    packed = conv.forward_packed(torch.cat(seqs), torch.cat([torch.arange(n) for n in lengths]))
    outputs = packed.split(lengths)
    for seq, out in zip(seqs, outputs):
        # the original: conv1d(x, weight * mask, bias, padding=2) with the mask on taps 0, 1, 2
        mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
        reference = F.conv1d(seq.T[None], conv.weight * mask, conv.bias, padding=2)[0].T
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(conv(seq.T[None])[0].T, reference, rtol=1e-5, atol=1e-6)


def test_conv_is_causal_and_sees_the_current_step() -> None:
    torch.manual_seed(0)
    conv = MaskedCausalConv1d(4, 5)
    x = torch.randn(10, 4)
    positions = torch.arange(10)
    base = conv.forward_packed(x, positions)
    changed = x.clone()
    changed[6] += 1.0
    diff = (conv.forward_packed(changed, positions) - base).abs().sum(1)
    assert diff[:6].max() == 0  # the past never sees the future
    assert (diff[6:9] > 0).all()  # steps t = 6, 7, 8 see x_6 (taps t-2 .. t)
    assert diff[9] == 0


def test_masked_taps_are_zero_and_get_no_gradient_and_init_follows_pytorch() -> None:
    torch.manual_seed(0)
    conv = MaskedCausalConv1d(32, 5)
    torch.manual_seed(0)
    reference = torch.nn.Conv1d(32, 32, 5, padding=2)  # default init, fan-in over all 5 taps (model/README.md §5)
    assert conv.weight[:, :, 3:].abs().max() == 0
    torch.testing.assert_close(conv.weight[:, :, :3], reference.weight[:, :, :3], rtol=0, atol=0)
    torch.testing.assert_close(conv.bias, reference.bias, rtol=0, atol=0)
    bound = 1 / math.sqrt(32 * 5)
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    # only the active taps are parameters: no gradient, no Adam moments for the masked ones
    assert [(name, tuple(p.shape)) for name, p in conv.named_parameters()] == [("taps", (3, 32, 32)), ("bias", (32,))]
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.1)
    conv.forward_packed(torch.randn(7, 32), torch.arange(7)).square().sum().backward()
    assert conv.taps.grad.abs().max() > 0
    optimizer.step()
    assert conv.weight[:, :, 3:].abs().max() == 0
    assert set(conv.state_dict()) == {"weight", "bias"} and conv.state_dict()["weight"].shape == (32, 32, 5)


def test_conv_on_shared_rows_equals_the_conv_on_copies_with_exact_gradients() -> None:
    torch.manual_seed(0)
    conv = MaskedCausalConv1d(6, 5).double()
    rows = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    # two sequences of 4 and 3 steps reading shared rows (as two views of one sample do)
    source, positions = torch.tensor([0, 2, 3, 5, 1, 2, 6]), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    copies = rows[source]
    torch.testing.assert_close(conv.forward_packed(rows, positions, source), conv.forward_packed(copies, positions))
    assert torch.autograd.gradcheck(
        lambda r, t, b: _conv_with(conv, t, b).forward_packed(r, positions, source), (rows, conv.taps, conv.bias)
    )


def _conv_with(conv: MaskedCausalConv1d, taps: torch.Tensor, bias: torch.Tensor) -> MaskedCausalConv1d:
    """The same conv computing with the given (gradcheck's) tensors."""
    clone = MaskedCausalConv1d.__new__(MaskedCausalConv1d)
    clone.__dict__.update(conv.__dict__)
    clone._parameters = {"taps": taps, "bias": bias}
    return clone


@pytest.mark.parametrize("attention", ["mlp", "gated"])
def test_forward_rows_equals_the_forward_of_the_copied_rows(attention: str) -> None:
    model = _model(attention=attention)
    torch.manual_seed(2)
    rows = torch.rand(9, 16)
    source = torch.tensor([[0, 1, 3, 4], [0, 2, 3, 5], [6, 7, 8, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    fast, plain = model.forward_rows(rows, source, mask), model(rows[source], mask)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b)
    fast.video_score.sum().backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain.video_score.sum().backward()
    for a, p in zip(fast_grads, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_state_dict_keeps_the_conv1d_layout_and_ignores_masked_taps_on_load() -> None:
    source, target = _model(seed=0), _model(seed=1)
    state = source.state_dict()
    foreign = dict(state, **{"conv.weight": state["conv.weight"].clone()})
    foreign["conv.weight"][:, :, 3:] = 7.0  # the authors' saved weights hold garbage there (model/README.md §5)
    target.load_state_dict(foreign)
    for name, value in state.items():
        torch.testing.assert_close(target.state_dict()[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(RuntimeError, match=r"size mismatch for conv\.weight"):
        _model(dim=8).load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"conv\.weight\""):
        target.load_state_dict({k: v for k, v in state.items() if k != "conv.weight"})


@pytest.mark.parametrize("attention", ["mlp", "gated"])
def test_padded_batch_equals_one_sequence_at_a_time(attention: str) -> None:
    model = _model(attention=attention).eval()
    torch.manual_seed(1)
    lengths = [7, 1, 4]
    seqs = [torch.rand(n, 16) for n in lengths]
    x = torch.full((3, 7, 16), float("nan"))  # padding content must not matter, even NaN
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for i, seq in enumerate(seqs):
        x[i, : len(seq)] = seq
        mask[i, : len(seq)] = True
    with torch.no_grad():
        batched = model(x, mask)
        for i, seq in enumerate(seqs):
            alone = model(seq[None])
            n = len(seq)
            torch.testing.assert_close(batched.attention[i, :n], alone.attention[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.tcam[i, :n], alone.tcam[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.video_score[i], alone.video_score[0], rtol=1e-5, atol=1e-6)
            assert (batched.attention[i, n:] == 0).all() and (batched.tcam[i, n:] == 0).all()
    assert torch.isfinite(batched.video_score).all()


def test_heads_sum_pooling_and_tcam_follow_the_code() -> None:
    model = _model().eval()
    x = torch.rand(2, 6, 16)
    with torch.no_grad():
        out = model(x)
        # the video feature is a SUM over time of λ_t x_t (raw features), not a mean (model/README.md §1 item 3)
        pooled = (out.attention.unsqueeze(2) * x).sum(1)
        torch.testing.assert_close(out.video_score, torch.sigmoid(model.classifier(pooled)).squeeze(1))
        # T-CAM is g(x_t) on raw rows (model/README.md §1 item 5), the weighted T-CAM λ_t g(x_t)
        torch.testing.assert_close(out.tcam, torch.sigmoid(model.classifier(x)).squeeze(2))
        torch.testing.assert_close(out.weighted_tcam, out.attention * out.tcam)
        assert model(x, with_tcam=False).tcam is None
    assert ((out.attention > 0) & (out.attention < 1)).all()


def test_gated_attention_starts_near_one_half() -> None:
    with torch.no_grad():
        attention = _model(attention="gated")(torch.rand(2, 9, 16)).attention
    assert (attention - 0.5).abs().max() < 1e-2


def test_bad_inputs_and_configs_are_rejected() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"x must be \(B, T, 16\)"):
        model(torch.rand(2, 5, 8))
    with pytest.raises(ValueError, match="right-padded"):
        model(torch.rand(1, 3, 16), torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="bool tensor"):
        model(torch.rand(1, 3, 16), torch.ones(1, 3))
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(kernel_size=4)
    with pytest.raises(ValueError, match="attention must be one of"):
        ModelConfig(attention="transformer")
    assert ModelConfig.from_dict(ModelConfig(attention="gated").to_dict()) == ModelConfig(attention="gated")
