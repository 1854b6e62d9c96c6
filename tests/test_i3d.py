"""The port reproduces DeepMind's original network (reference outputs in ../shared/reference/i3d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vadpipe.extract.i3d import ENDPOINTS, InceptionI3d, _same_pads, fold_batch_norm
from vadpipe.extract.transforms import to_unit_range


def test_same_padding_matches_tf_rule():
    # 16x224x224 through Conv1a (7, stride 2): (2, 3) on every dim; stride-1 3x3x3: (1, 1)
    assert _same_pads((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [(2, 3)] * 3
    assert _same_pads((8, 56, 56), (3, 3, 3), (1, 1, 1)) == [(1, 1)] * 3
    assert _same_pads((8, 112, 112), (1, 3, 3), (1, 2, 2)) == [(0, 0), (0, 1), (0, 1)]
    assert _same_pads((4, 14, 14), (2, 2, 2), (2, 2, 2)) == [(0, 0)] * 3
    assert _same_pads((5,), (3,), (2,)) == [(1, 1)]  # odd size: out 3, total 2


@pytest.mark.slow
def test_endpoint_shapes_for_a_16_frame_clip():
    net = InceptionI3d().eval()
    with torch.inference_mode():
        eps = net.forward_endpoints(torch.zeros(1, 3, 16, 224, 224))
    assert tuple(eps["Conv3d_1a_7x7"].shape) == (1, 64, 8, 112, 112)
    assert tuple(eps["MaxPool3d_4a_3x3"].shape) == (1, 480, 4, 14, 14)
    assert tuple(eps["Mixed_5c"].shape) == (1, 1024, 2, 7, 7)
    assert list(eps) == list(ENDPOINTS)


@pytest.fixture(scope="module")
def reference_run(shared_dir, i3d_model):
    ref = shared_dir / "reference" / "i3d"
    u8 = np.load(ref / "clip_uint8.npy")  # (16, 224, 224, 3)
    x = to_unit_range(torch.from_numpy(u8).permute(3, 0, 1, 2)[None])
    model = i3d_model[0]
    with torch.inference_mode():
        eps = model.forward_endpoints(x.contiguous(memory_format=torch.channels_last_3d))
        logits = model.forward_head(eps["Mixed_5c"].mean(dim=(2, 3, 4)))
    return ref, eps, logits


@pytest.mark.slow
def test_port_reproduces_reference_feature_and_logits(reference_run):
    ref, eps, logits = reference_run
    feat = eps["Mixed_5c"].mean(dim=(2, 3, 4))[0].numpy()
    assert np.abs(feat - np.load(ref / "clip_feat1024.npy")).max() < 1e-4
    assert np.abs(logits[0].numpy() - np.load(ref / "clip_logits.npy")).max() < 1e-3


@pytest.mark.slow
def test_port_reproduces_every_endpoint_channel_mean(reference_run):
    ref, eps, _ = reference_run
    means = np.load(ref / "clip_endpoint_chanmeans.npz")
    checked = 0
    for name in means.files:
        if name in eps:
            ours = eps[name].mean(dim=(0, 2, 3, 4)).numpy()
            assert np.abs(ours - means[name].reshape(-1)).max() < 1e-4, name
            checked += 1
    assert checked == len(ENDPOINTS)


@pytest.mark.slow
def test_top5_classes_match_reference(reference_run):
    import json

    ref, _, logits = reference_run
    labels = (ref / "k400_labels.txt").read_text().splitlines()
    top5 = json.loads((ref / "top5.json").read_text())
    ours = torch.topk(logits[0], 5).indices.tolist()
    assert ours == [entry["index"] for entry in top5["top5"]["clip"]]
    assert labels[ours[0]] == top5["top5"]["clip"][0]["label"]


@pytest.mark.slow
def test_forward_is_head_of_features_and_matches_reference_logits(shared_dir, i3d_model):
    ref = shared_dir / "reference" / "i3d"
    x = to_unit_range(torch.from_numpy(np.load(ref / "clip_uint8.npy")).permute(3, 0, 1, 2)[None])
    model = i3d_model[0]
    with torch.inference_mode():
        logits = model.forward_head(model.forward_features(x))
        assert torch.equal(logits, model(x))
    assert np.abs(logits[0].numpy() - np.load(ref / "clip_logits.npy")).max() < 1e-3


@pytest.mark.slow
def test_folded_network_matches_reference_and_leaves_the_original_alone(shared_dir):
    from vadpipe.extract.weights import load_i3d

    ref = shared_dir / "reference" / "i3d"
    x = to_unit_range(torch.from_numpy(np.load(ref / "clip_uint8.npy")).permute(3, 0, 1, 2)[None])
    model, _ = load_i3d()
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    with torch.inference_mode():
        feat = folded.forward_features(x)[0].numpy()
        unfolded = model.forward_features(x)[0].numpy()
        logits = folded(x)[0].numpy()
    assert np.abs(feat - np.load(ref / "clip_feat1024.npy")).max() < 1e-4
    assert np.abs(feat - unfolded).max() < 1e-4
    assert np.abs(logits - np.load(ref / "clip_logits.npy")).max() < 1e-3


def test_fold_matches_the_unfolded_network_with_nontrivial_statistics():
    torch.manual_seed(0)
    net = InceptionI3d(num_classes=5).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    x = torch.rand(1, 3, 8, 64, 64) * 2 - 1
    with torch.inference_mode():
        assert torch.allclose(fold_batch_norm(net)(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_port_on_cuda_matches_reference_with_tf32_off(shared_dir):
    from vadpipe.extract.encoder import ClipEncoder
    from vadpipe.extract.weights import load_i3d

    ref = shared_dir / "reference" / "i3d"
    model, _ = load_i3d(device="cuda")
    encoder = ClipEncoder(model, torch.device("cuda"), "fp32")
    u8 = torch.from_numpy(np.load(ref / "clip_uint8.npy")).permute(3, 0, 1, 2)[None]
    feat = encoder(u8)[0]
    assert np.abs(feat - np.load(ref / "clip_feat1024.npy")).max() < 1e-4
