"""Shared fixtures: the repo's ../shared folder, tiny PyAV-encoded videos, and one CPU I3D encoder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "reference" / "i3d").is_dir():
        pytest.skip(f"reference data not found at {SHARED} (the read-only ../shared folder beside the repo)")
    return SHARED


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child a test will SIGINT: give it SIGINT's default action.

    A shell without job control starts background commands (``make test &``, CI runners) with
    SIGINT ignored, the child inherits that, and Python then never raises KeyboardInterrupt, so
    the command under test would run to the end; a user's Ctrl-C reaches a foreground job."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def moving_frames(n_frames: int, width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8: a textured background with a bright square moving across it."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    frames = np.repeat(base[None], n_frames, axis=0).copy()
    side = max(4, min(width, height) // 4)
    for i in range(n_frames):
        x = int((width - side) * i / max(n_frames - 1, 1))
        y = (height - side) // 2
        frames[i, y : y + side, x : x + side] = (255, 255 - 4 * (i % 60), 30)
    return frames


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    fps: int = 25,
    codec: str = "libx264",
    rotation: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
) -> Path:
    """Encode (n, H, W, 3) uint8 frames with PyAV; optional display rotation and explicit pts (VFR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv444p" if (w % 2 or h % 2) else "yuv420p"  # 4:2:0 needs even sizes
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def make_video(tmp_path):
    """Factory: ``make_video("name.mp4", n_frames=50, width=64, height=48, **write_video kwargs)``."""

    def make(name: str, n_frames: int = 50, width: int = 96, height: int = 64, *, seed: int = 0, **kw) -> Path:
        return write_video(tmp_path / name, moving_frames(n_frames, width, height, seed=seed), **kw)

    return make


@pytest.fixture(scope="session")
def i3d_model():
    """(InceptionI3d as loaded, weights id): the real Kinetics-400 weights (fetched once, then cached)."""
    from vadpipe.extract.weights import load_i3d

    return load_i3d(device="cpu")


@pytest.fixture(scope="session")
def i3d_cpu(i3d_model):
    """(ClipEncoder on CPU in fp32, weights id) over ``i3d_model``."""
    import torch

    from vadpipe.extract.encoder import ClipEncoder

    model, ident = i3d_model
    return ClipEncoder(model, torch.device("cpu"), "fp32"), ident


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models train faster on one thread (extra threads only add synchronisation, and noise on a
    busy CI box); modules opt in with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
