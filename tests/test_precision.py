"""Each offered precision keeps the reference features; one the device cannot run natively is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vadpipe.errors import ConfigError
from vadpipe.extract.encoder import ClipEncoder
from vadpipe.extract.inference import check_precision, cpu_has_native_bf16


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def bikes_clips(shared_dir):
    """The 8 reference clips of bikes.mp4 as uint8 centre crops, and the original network's features."""
    from vadpipe.extract.decode import open_frames
    from vadpipe.extract.transforms import crop_clip, resize_frame

    ref = shared_dir / "reference" / "i3d"
    frames = []
    with open_frames(shared_dir / "media" / "bikes.mp4") as (_, video_frames):
        for frame in video_frames:
            frames.append(resize_frame(frame.rgb))
            if len(frames) == 8 * 16:
                break
    clips = torch.stack([crop_clip(torch.stack(frames[i * 16 : (i + 1) * 16]), 224, "center")[0] for i in range(8)])
    return clips, np.load(ref / "bikes_feats.npy")


def test_fp16_is_refused_on_cpu():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        check_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native BF16: the refusal does not apply")
def test_bf16_is_refused_on_a_cpu_without_native_bf16():
    with pytest.raises(ConfigError, match="emulated"):
        check_precision("bf16", torch.device("cpu"))


def _openvino_installed() -> bool:
    try:
        import onnx  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["torch", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_offered_precision_and_runtime_keeps_the_reference_features(
    precision, runtime, bikes_clips, shared_dir, i3d_model, tmp_path, monkeypatch
):
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native BF16 (AVX512-BF16/AMX): bf16 is refused here")
    if runtime == "openvino" and not _openvino_installed():
        pytest.skip("the openvino extra is not installed (pip install 'vadpipe[openvino]')")
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path))  # the exported ONNX file goes there
    clips, reference = bikes_clips
    encoder = ClipEncoder(i3d_model[0], torch.device("cpu"), precision, runtime=runtime)
    feats = np.concatenate([encoder(clips[i : i + 4]) for i in range(0, 8, 4)])
    assert feats.dtype == np.float32 and feats.shape == (8, 1024)
    assert _cosines(feats, reference).min() >= 0.999
    if precision == "fp32":  # the reference clip itself (no decoding in between): float rounding only
        ref = shared_dir / "reference" / "i3d"
        clip = torch.from_numpy(np.load(ref / "clip_uint8.npy")).permute(3, 0, 1, 2)[None]
        assert np.abs(encoder(clip)[0] - np.load(ref / "clip_feat1024.npy")).max() < 1e-4
    if runtime == "openvino":
        assert list((tmp_path / "openvino").glob("*.onnx")), "the exported network is cached"


def test_unknown_or_misplaced_runtime_is_refused():
    from vadpipe.extract.inference import check_runtime

    with pytest.raises(ConfigError, match="runtime must be one of torch, openvino"):
        check_runtime("tensorrt", torch.device("cpu"))
    with pytest.raises(ConfigError, match="runs on CPUs"):
        check_runtime("openvino", torch.device("cuda"))


@pytest.mark.slow
def test_extract_with_the_openvino_runtime_records_it_and_matches_torch(make_video, tmp_path, monkeypatch):
    if not _openvino_installed():
        pytest.skip("the openvino extra is not installed (pip install 'vadpipe[openvino]')")
    import json

    from click.testing import CliRunner

    from vadpipe.cli import main
    from vadpipe.extract.weights import resolve_weights

    weights, _ = resolve_weights()  # the per-user copy, passed explicitly: nothing is downloaded
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path / "vadpipe-cache"))  # the exported ONNX goes here
    video = make_video("walk.mp4", n_frames=32, width=128, height=96)
    caches = {}
    for runtime in ("torch", "openvino"):
        out = tmp_path / runtime
        result = CliRunner().invoke(
            main, ["extract", str(video), "--features", str(out), "--runtime", runtime, "-q", "--weights", str(weights)]
        )
        assert result.exit_code == 0, result.output
        record = json.loads((out / "walk.json").read_text())
        caches[runtime] = (record, np.load(out / "walk__0.npy"))
    torch_rec, torch_feats = caches["torch"]
    ov_rec, ov_feats = caches["openvino"]
    assert ov_rec["extractor"]["settings"]["runtime"] == "openvino"
    assert torch_rec["extractor"]["settings_key"] != ov_rec["extractor"]["settings_key"]
    assert ov_feats.shape == torch_feats.shape == (2, 1024)
    assert np.abs(ov_feats - torch_feats).max() < 1e-4
