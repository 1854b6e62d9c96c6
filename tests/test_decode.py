"""Decoding and preprocessing: real files encoded with PyAV in the test, real timestamps."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from vadpipe.errors import DecodeError
from vadpipe.extract.decode import open_frames
from vadpipe.extract.transforms import crop_boxes, crop_clip, resize_frame, resized_size, to_unit_range


def _decode(path, **kw):
    with open_frames(path, **kw) as (info, frames):
        return info, list(frames)


def test_frames_and_times_of_a_constant_rate_video(make_video):
    info, frames = _decode(make_video("a.mp4", n_frames=50, fps=25))
    assert (info.width, info.height, info.fps) == (96, 64, 25.0)
    assert [f.index for f in frames] == list(range(50))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(50) / 25, atol=1e-9)
    assert frames[0].rgb.shape == (64, 96, 3) and frames[0].rgb.dtype == np.uint8


def test_variable_frame_rate_times_come_from_the_stream(make_video):
    pts = [0, 40, 80, 200, 240, 400, 440, 480, 900, 940]
    info, frames = _decode(make_video("vfr.mp4", n_frames=10, pts=pts, time_base=Fraction(1, 1000)))
    np.testing.assert_allclose([f.time_s for f in frames], np.array(pts) / 1000, atol=1e-9)


def test_fps_resampling_picks_the_frame_on_screen(make_video):
    pts = [0, 40, 80, 200, 240, 400, 440, 480]
    path = make_video("vfr.mp4", n_frames=8, pts=pts, time_base=Fraction(1, 1000))
    _, native = _decode(path)
    _, frames = _decode(path, fps=10)
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # at t=0.1 the frame shown is the one from 0.08 (index 2); at 0.3 the one from 0.24 (index 4)
    assert np.array_equal(frames[1].rgb, native[2].rgb)
    assert np.array_equal(frames[3].rgb, native[4].rgb)
    assert np.array_equal(frames[5].rgb, native[7].rgb)


def test_rotation_metadata_gives_upright_frames(tmp_path):
    from conftest import write_video

    raw = np.zeros((4, 64, 96, 3), dtype=np.uint8)
    raw[:, :16, -16:] = 255  # white marker in the top-right corner of the stored picture
    path = write_video(tmp_path / "rot.mp4", raw, rotation=90)
    info, frames = _decode(path)
    assert (info.width, info.height, info.rotation) == (64, 96, 90)
    rgb = frames[0].rgb
    assert rgb.shape == (96, 64, 3)
    # 90 degrees counter-clockwise (FFmpeg's autorotate): the top-right corner moves to the top-left
    assert rgb[:16, :16].mean() > 200 and rgb[-16:, -16:].mean() < 50


def test_odd_sizes_decode_and_resize(make_video):
    info, frames = _decode(make_video("odd.mp4", n_frames=3, width=175, height=143))
    assert frames[0].rgb.shape == (143, 175, 3)
    out = resize_frame(frames[0].rgb)
    assert tuple(out.shape) == (3, 256, 313)


def test_too_small_frames_are_refused(make_video):
    with pytest.raises(DecodeError, match="too small"):
        _decode(make_video("tiny.mp4", n_frames=3, width=8, height=8))


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"hello, not a video" * 10, "not a readable video")])
def test_broken_files_raise_clear_errors(tmp_path, content, reason):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason) as info:
        _decode(path)
    assert str(path) in str(info.value)


def test_audio_only_file_is_refused(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(DecodeError, match="no video stream"):
        _decode(path)


def test_truncated_file_decodes_what_it_can(make_video, tmp_path):
    path = make_video("full.mkv", n_frames=60)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with open_frames(cut) as (_, frames):
        got = list(frames)
    assert 0 < len(got) < 60


def test_resize_matches_pillow_bilinear_within_two_levels():
    from PIL import Image

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    img = np.kron(img, np.ones((4, 4, 1), dtype=np.uint8))  # 360x640: smooth areas and edges
    ours = resize_frame(img).permute(1, 2, 0).numpy().astype(int)
    oh, ow = resized_size(360, 640)
    pil = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR)).astype(int)
    assert ours.shape == pil.shape == (256, 455, 3)
    assert np.abs(ours - pil).max() <= 2


@pytest.mark.parametrize("height,width", [(272, 640), (576, 768), (64, 96), (1080, 1920), (300, 257)])
def test_resize_is_byte_identical_to_torchvision_v2(height, width):
    """The resize uses torch's uint8 kernel directly; it must stay torchvision v2's resize exactly."""
    from torchvision.transforms.v2 import functional as TF

    img = np.random.default_rng(height).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ours = resize_frame(img)
    frame = torch.from_numpy(img).permute(2, 0, 1)
    theirs = TF.resize(
        frame, list(resized_size(height, width)), interpolation=TF.InterpolationMode.BILINEAR, antialias=True
    )
    assert ours.dtype == torch.uint8 and torch.equal(ours, theirs)


def test_extraction_does_not_import_torchvision():
    import subprocess
    import sys

    code = (
        "import sys; import vadpipe.extract.runner, vadpipe.extract.transforms; "
        "sys.exit(1 if 'torchvision' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "start-up would pay for torchvision"


def test_crops_centre_first_then_corners_then_flips():
    clip = torch.arange(2 * 3 * 256 * 300, dtype=torch.int32).reshape(2, 3, 256, 300).to(torch.uint8)
    boxes = crop_boxes(256, 300, 224, "ten")
    assert boxes[:5] == [(16, 38, False), (0, 0, False), (0, 76, False), (32, 0, False), (32, 76, False)]
    assert all(flip for *_, flip in boxes[5:])
    crops = crop_clip(clip, 224, "ten")
    assert tuple(crops.shape) == (10, 3, 2, 224, 224)
    assert torch.equal(crops[0], clip[:, :, 16:240, 38:262].permute(1, 0, 2, 3))
    assert torch.equal(crops[5], crops[0].flip(-1))


def test_scaling_to_minus_one_one():
    x = to_unit_range(torch.tensor([0, 255], dtype=torch.uint8))
    assert x.tolist() == [-1.0, 1.0]


def test_decord_backend_gives_the_same_frames(make_video):
    pytest.importorskip("decord", reason="decord is an optional backend (pip install 'vadpipe[decord]')")
    path = make_video("d.mp4", n_frames=20)
    _, a = _decode(path)
    _, b = _decode(path, backend="decord")
    assert len(a) == len(b)
    np.testing.assert_allclose([f.time_s for f in a], [f.time_s for f in b], atol=1e-3)
    assert np.abs(a[5].rgb.astype(int) - b[5].rgb.astype(int)).mean() < 2.0
