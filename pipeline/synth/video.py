"""One video: its frames (scene + figures + motion + drawing), its file, and its ground truth."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadpipe.errors import ConfigError
from vadpipe.synth.config import Anomaly, SynthConfig
from vadpipe.synth.drawing import draw_people
from vadpipe.synth.encoding import available_codec, encode_video
from vadpipe.synth.figures import Figures
from vadpipe.synth.motion import Tracks, simulate
from vadpipe.synth.scene import Scene

__all__ = ["VideoTruth", "render_frames", "render_video"]

_NORMAL_KIND = "normal"


@dataclass(frozen=True)
class VideoTruth:
    """Ground truth of one generated video.

    ``label`` is 0 (normal) or 1 (anomalous); ``anomaly`` is None for normal videos. ``path`` is
    absolute; ``split`` is None for a video rendered outside a dataset.
    """

    stem: str
    path: Path
    label: int
    anomaly: Anomaly | None
    n_frames: int
    fps: int
    width: int
    height: int
    codec: str
    split: str | None = None

    @property
    def kind(self) -> str:
        """``"normal"`` or the anomaly kind."""
        return self.anomaly.kind if self.anomaly else _NORMAL_KIND

    @property
    def intervals(self) -> list[tuple[int, int]]:
        """Half-open anomalous frame intervals (empty for normal videos)."""
        return [(self.anomaly.start_frame, self.anomaly.end_frame)] if self.anomaly else []

    def frame_labels(self) -> np.ndarray:
        """Per-frame ground truth, ``(n_frames,)`` uint8, 1 inside the anomaly."""
        gt = np.zeros(self.n_frames, dtype=np.uint8)
        for start, end in self.intervals:
            gt[start:end] = 1
        return gt

    def to_dict(self, *, root: Path | None = None) -> dict:
        """JSON-ready record; ``path`` is made relative to ``root`` when given."""
        path = self.path.relative_to(root).as_posix() if root is not None else str(self.path)
        anomaly = None
        if self.anomaly:
            anomaly = {
                "kind": self.anomaly.kind,
                "start_frame": self.anomaly.start_frame,
                "end_frame": self.anomaly.end_frame,
                "start_s": self.anomaly.start_frame / self.fps,
                "end_s": self.anomaly.end_frame / self.fps,
            }
        return {
            "stem": self.stem,
            "path": path,
            "split": self.split,
            "label": self.label,
            "kind": self.kind,
            "anomaly": anomaly,
            "n_frames": self.n_frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "codec": self.codec,
        }

    @classmethod
    def from_dict(cls, data: Mapping, *, root: Path) -> VideoTruth:
        """Inverse of :meth:`to_dict`; relative paths are taken under ``root`` (an absolute path)."""
        a = data["anomaly"]
        return cls(
            stem=data["stem"],
            path=root / data["path"],
            label=int(data["label"]),
            anomaly=Anomaly(a["kind"], int(a["start_frame"]), int(a["end_frame"])) if a else None,
            n_frames=int(data["n_frames"]),
            fps=int(data["fps"]),
            width=int(data["width"]),
            height=int(data["height"]),
            codec=data["codec"],
            split=data["split"],
        )


def render_frames(
    *, n_frames: int, anomaly: Anomaly | None, config: SynthConfig = SynthConfig(), seed: int = 0
) -> Iterator[np.ndarray]:
    """The video's frames, one by one, each ``(height, width, 3)`` uint8 RGB.

    The scene and the figure tracks (a few floats per figure and frame) are made here, up front;
    pixels are made one frame at a time as the iterator is consumed, so memory does not grow
    with ``n_frames``.
    """
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ConfigError(f"n_frames must be a positive integer, got {n_frames!r}")
    if anomaly is not None and anomaly.end_frame > n_frames:
        raise ConfigError(
            f"anomaly [{anomaly.start_frame}, {anomaly.end_frame}) ends after the video ({n_frames} frames)"
        )
    rng = np.random.default_rng(seed)
    scene = Scene.create(config, rng)
    n_figures = int(rng.integers(config.n_figures[0], config.n_figures[1] + 1))
    figures = Figures.create(n_figures, rng)
    tracks = simulate(n_frames, n_figures, anomaly, scene, config, figures.size, rng)
    return _frames(scene, figures, tracks, np.random.default_rng(rng.integers(2**63)))


def _frames(scene: Scene, figures: Figures, tracks: Tracks, noise_rng: np.random.Generator) -> Iterator[np.ndarray]:
    for t in range(len(tracks.light)):
        frame = scene.background * tracks.light[t]
        draw_people(frame, tracks, t, figures)
        frame += scene.noise[int(noise_rng.integers(len(scene.noise)))]  # holds the +0.5 for rounding
        yield np.clip(frame, 0, 255, out=frame).astype(np.uint8)


def render_video(
    path: str | os.PathLike,
    *,
    n_frames: int,
    anomaly: Anomaly | None,
    config: SynthConfig = SynthConfig(),
    seed: int = 0,
    split: str | None = None,
) -> VideoTruth:
    """Render one video to ``path`` (written atomically) and return its ground truth.

    Args:
        path: output file; its suffix picks the container (``.mp4`` recommended).
        n_frames: number of frames to write.
        anomaly: the abnormal stretch, or None for a normal video (see :func:`sample_anomaly`).
        config: look and encoding.
        seed: the same seed and arguments give byte-identical frames.
        split: recorded in the returned truth.

    Example:
        >>> truth = render_video("clip.mp4", n_frames=96, anomaly=Anomaly("fight", 40, 80))  # doctest: +SKIP
        >>> truth.intervals  # doctest: +SKIP
        [(40, 80)]
    """
    path = Path(path).absolute()
    codec = available_codec(config.codec)
    frames = render_frames(n_frames=n_frames, anomaly=anomaly, config=config, seed=seed)
    encode_video(path, frames, codec=codec, config=config)
    return VideoTruth(
        stem=path.stem,
        path=path,
        label=int(anomaly is not None),
        anomaly=anomaly,
        n_frames=n_frames,
        fps=config.fps,
        width=config.width,
        height=config.height,
        codec=codec,
        split=split,
    )
