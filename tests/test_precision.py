"""Each offered precision keeps the reference features; one the device cannot run natively is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vadpipe.errors import ConfigError
from vadpipe.extract.inference import check_precision, cpu_has_native_bf16
from vadpipe.extract.runner import ClipEncoder


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
    clips = torch.stack([crop_clip(torch.stack(frames[i * 16:(i + 1) * 16]), 224, "center")[0] for i in range(8)])
    return clips, np.load(ref / "bikes_feats.npy")


def test_fp16_is_refused_on_cpu():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        check_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native BF16: the refusal does not apply")
def test_bf16_is_refused_on_a_cpu_without_native_bf16():
    with pytest.raises(ConfigError, match="emulated"):
        check_precision("bf16", torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_offered_cpu_precision_keeps_the_reference_features(precision, bikes_clips, i3d_cpu):
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native BF16 (AVX512-BF16/AMX): bf16 is refused here")
    clips, reference = bikes_clips
    encoder = ClipEncoder(i3d_cpu[0].model, torch.device("cpu"), precision)
    feats = np.concatenate([encoder(clips[i:i + 4]) for i in range(0, 8, 4)])
    assert feats.dtype == np.float32 and feats.shape == (8, 1024)
    assert _cosines(feats, reference).min() >= (0.999 if precision == "fp32" else 0.999)
