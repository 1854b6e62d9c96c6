"""vadpipe's own synthetic surveillance videos: a labelled dataset with known anomalous stretches.

Why it exists: ``vadpipe demo`` and the benchmarks need videos whose anomalies are known to the
frame, that a fresh machine can make in seconds without downloading a dataset, and that a
Kinetics-400 I3D can tell apart. Each video is a static, textured plaza seen by a fixed camera
(perspective paving, a building facade, planters and lamp posts, mild sensor noise and light
drift) with several people-like figures (head, torso, arms, legs; varied clothes) walking
between random waypoints, sometimes pausing. An anomalous video contains one stretch
``[start_frame, end_frame)`` where something abnormal happens, and is normal elsewhere:

- ``run``: several figures sprint erratically (4-6x walking speed, zig-zagging);
- ``fall``: a figure falls to the ground, thrashes, gets up; bystanders rush to it;
- ``fight``: two or three figures meet and grapple violently (lunges, flailing arms, kicks);
- ``scatter``: every figure flees from a point in panic, arms raised.

The anomalies are big, fast and erratic on purpose: the detector only sees I3D features averaged
over 16-frame clips, and subtle changes would not survive that. All figures stay inside the
region that I3D's default centre crop sees (short side resized to 256 px, centre 224 px).

Rendering is vectorised numpy (every body part is a soft-edged capsule; the pixel maths for all
parts of a frame runs at once on small patches around them). Frames stream one at a time into a
real H.264 (``libx264``, else MPEG-4 part 2) yuv420p encoder, so memory does not grow with video
length. Everything is determined by the seed: the same seed
gives byte-identical frames.

Example:
    >>> from vadpipe.synth import SplitSize, SynthConfig, make_dataset
    >>> ds = make_dataset("demo-data", splits={"train": SplitSize(2, 2)},
    ...                   config=SynthConfig(n_frames=64), seed=0)  # doctest: +SKIP
    >>> [v.stem for v in ds.videos if v.label == 1]  # doctest: +SKIP
    ['synth_train_002_label_fight', 'synth_train_003_label_scatter']
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import secrets
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import av
import numpy as np
from scipy import ndimage

from vadpipe._version import __version__
from vadpipe.errors import ConfigError, DataError

__all__ = [
    "ANOMALY_KINDS",
    "DEMO_SPLITS",
    "MANIFEST_SCHEMA_VERSION",
    "Anomaly",
    "SplitSize",
    "SynthConfig",
    "SynthDataset",
    "VideoTruth",
    "available_codec",
    "load_dataset",
    "make_dataset",
    "render_frames",
    "render_video",
    "sample_anomaly",
]

ANOMALY_KINDS: tuple[str, ...] = ("run", "fall", "fight", "scatter")
MANIFEST_SCHEMA_VERSION = 1

_GENERATOR = "vadpipe.synth"
_NORMAL_KIND = "normal"
_CODECS = ("libx264", "mpeg4")
# The view of the extractor's default preprocessing (short side -> 256 px, centre crop 224 px):
# the action is kept inside it so that a centre-crop I3D sees every figure.
_VIEW_SHORT_SIDE_PX = 256
_VIEW_CROP_PX = 224


def _as_range(name: str, value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair) or pair[0] > pair[1]:
        raise ConfigError(f"{name} must be an int or an inclusive (min, max) pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """What the generated videos look like; the same config and seed give the same videos.

    Args:
        width, height: frame size in pixels (even numbers, for yuv420p).
        fps: frame rate of the encoded file.
        n_frames: frames per video, a fixed ``int`` or an inclusive ``(min, max)`` range drawn per video.
        n_figures: people per video, a fixed ``int`` or an inclusive ``(min, max)`` range.
        figure_height: height of a standing figure at the front of the scene, as a fraction of
            the frame height (figures further back are up to 30% smaller).
        anomaly_fraction: ``(min, max)`` share of an anomalous video's frames that are anomalous.
        anomaly_kinds: which of :data:`ANOMALY_KINDS` anomalous videos draw from (cycled in turn).
        codec: ``"auto"`` (``libx264`` when the installed PyAV has it, else ``mpeg4``),
            ``"libx264"`` or ``"mpeg4"``.
    """

    width: int = 320
    height: int = 240
    fps: int = 25
    n_frames: int | tuple[int, int] = (112, 160)
    n_figures: int | tuple[int, int] = (4, 7)
    figure_height: float = 0.26
    anomaly_fraction: tuple[float, float] = (0.25, 0.5)
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    codec: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_frames", _as_range("n_frames", self.n_frames))
        object.__setattr__(self, "n_figures", _as_range("n_figures", self.n_figures))
        object.__setattr__(self, "anomaly_fraction", tuple(float(f) for f in self.anomaly_fraction))
        object.__setattr__(self, "anomaly_kinds", tuple(self.anomaly_kinds))
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 64 or value % 2:
                raise ConfigError(f"{name} must be an even integer >= 64 (yuv420p needs even sizes), got {value!r}")
        if not isinstance(self.fps, int) or not 1 <= self.fps <= 120:
            raise ConfigError(f"fps must be an integer in [1, 120], got {self.fps!r}")
        if self.n_frames[0] < 16:
            raise ConfigError(f"n_frames must be >= 16 (one I3D clip), got {self.n_frames}")
        if self.n_figures[0] < 2 or self.n_figures[1] > 32:
            raise ConfigError(f"n_figures must lie in [2, 32] (a fight needs two people), got {self.n_figures}")
        if not 0.05 <= self.figure_height <= 0.6:
            raise ConfigError(
                f"figure_height must be a fraction of the frame height in [0.05, 0.6], got {self.figure_height}"
            )
        lo, hi = self.anomaly_fraction if len(self.anomaly_fraction) == 2 else (-1.0, -1.0)
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                f"anomaly_fraction must be (min, max) with 0 < min <= max <= 1, got {self.anomaly_fraction}"
            )
        unknown = [k for k in self.anomaly_kinds if k not in ANOMALY_KINDS]
        if not self.anomaly_kinds or unknown:
            raise ConfigError(f"anomaly_kinds must be a non-empty subset of {ANOMALY_KINDS}, got {self.anomaly_kinds}")
        if self.codec not in ("auto", *_CODECS):
            raise ConfigError(f"codec must be 'auto', 'libx264' or 'mpeg4', got {self.codec!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict (ranges as lists) that :meth:`from_dict` turns back into the same config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthConfig:
        """Inverse of :meth:`to_dict`."""
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"not a SynthConfig dict: {exc}") from None


@dataclass(frozen=True)
class Anomaly:
    """One abnormal stretch: ``kind`` (one of :data:`ANOMALY_KINDS`) on frames ``[start_frame, end_frame)``."""

    kind: str
    start_frame: int
    end_frame: int

    def __post_init__(self) -> None:
        if self.kind not in ANOMALY_KINDS:
            raise ConfigError(f"anomaly kind must be one of {ANOMALY_KINDS}, got {self.kind!r}")
        if not 0 <= self.start_frame < self.end_frame:
            raise ConfigError(
                f"anomaly frames must satisfy 0 <= start_frame < end_frame, got [{self.start_frame}, {self.end_frame})"
            )


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


@dataclass(frozen=True)
class SplitSize:
    """How many normal and anomalous videos one split holds."""

    normal: int
    anomalous: int

    def __post_init__(self) -> None:
        if self.normal < 0 or self.anomalous < 0 or self.normal + self.anomalous == 0:
            raise ConfigError(f"a split needs >= 0 videos of each label and at least one in all, got {self}")


# The demo's default: 24 training and 8 held-out videos (about 270 I3D clips at the default length).
DEMO_SPLITS: Mapping[str, SplitSize] = MappingProxyType({"train": SplitSize(12, 12), "test": SplitSize(4, 4)})


@dataclass(frozen=True)
class SynthDataset:
    """A generated dataset on disk: ``root/<split>/{normal,anomalous}/<stem>.mp4`` plus metadata files."""

    root: Path
    config: SynthConfig
    seed: int
    splits: Mapping[str, SplitSize]
    videos: tuple[VideoTruth, ...] = field(repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def annotations_path(self) -> Path:
        """XD-Violence style ``<stem> s1 e1`` lines (half-open frame intervals), anomalous videos only."""
        return self.root / "annotations.txt"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.csv"

    def split(self, name: str) -> tuple[VideoTruth, ...]:
        """The videos of one split, in manifest order."""
        if name not in self.splits:
            raise DataError(f"no split {name!r} in {self.root} (it has {sorted(self.splits)})")
        return tuple(v for v in self.videos if v.split == name)

    def split_dir(self, name: str) -> Path:
        """The folder whose ``normal/`` and ``anomalous/`` subfolders give ``vadpipe train`` its labels."""
        self.split(name)
        return self.root / name


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def available_codec(requested: str = "auto") -> str:
    """The encoder to use: ``libx264`` if this PyAV build can encode H.264, else ``mpeg4``.

    Raises:
        ConfigError: a specific codec was requested and the installed PyAV cannot encode it.
    """
    candidates = _CODECS if requested == "auto" else (requested,)
    for name in candidates:
        try:
            av.Codec(name, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError: not built into this FFmpeg
            continue
        return name
    raise ConfigError(f"the installed PyAV ({av.__version__}) cannot encode {requested!r}; use codec='auto'")


def sample_anomaly(n_frames: int, *, config: SynthConfig, rng: np.random.Generator, kind: str | None = None) -> Anomaly:
    """Draw an anomalous stretch covering ``config.anomaly_fraction`` of ``n_frames``, anywhere in the video.

    ``kind`` defaults to a uniform draw from ``config.anomaly_kinds``.
    """
    if n_frames < 1:
        raise ConfigError(f"n_frames must be >= 1, got {n_frames}")
    lo, hi = config.anomaly_fraction
    length = int(np.clip(round(rng.uniform(lo, hi) * n_frames), 1, n_frames))
    start = int(rng.integers(0, n_frames - length + 1))
    if kind is None:
        kind = config.anomaly_kinds[int(rng.integers(len(config.anomaly_kinds)))]
    return Anomaly(kind, start, start + length)


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
    scene = _Scene.create(config, rng)
    n_figures = int(rng.integers(config.n_figures[0], config.n_figures[1] + 1))
    figures = _Figures.create(n_figures, rng)
    tracks = _simulate(n_frames, n_figures, anomaly, scene, config, figures.size, rng)
    return _frames(scene, figures, tracks, np.random.default_rng(rng.integers(2**63)))


def _frames(scene: _Scene, figures: _Figures, tracks: _Tracks, noise_rng: np.random.Generator) -> Iterator[np.ndarray]:
    for t in range(len(tracks.light)):
        frame = scene.background * tracks.light[t]
        _draw_people(frame, tracks, t, figures)
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
    _encode_atomic(path, frames, codec=codec, config=config)
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


def make_dataset(
    out_dir: str | os.PathLike,
    *,
    splits: Mapping[str, SplitSize] = DEMO_SPLITS,
    config: SynthConfig = SynthConfig(),
    seed: int = 0,
    workers: int | None = None,
    on_video: Callable[[VideoTruth], None] | None = None,
) -> SynthDataset:
    """Generate a labelled dataset under ``out_dir`` and return its manifest.

    Layout: ``<split>/normal/<stem>.mp4`` and ``<split>/anomalous/<stem>.mp4`` (the folder names are
    the labels ``vadpipe train`` reads), ``annotations.txt`` (XD-Violence format: ``<stem> s e``,
    half-open frame interval, one line per anomalous video of every split), ``labels.csv``
    (``video,label``) and ``manifest.json`` (``"complete": true`` once every file is written).
    Stems are unique across splits and carry XD-Violence's label tag (``_label_A`` = normal).

    Each video's content depends only on ``seed``, its split name and its index, so changing the
    number of videos in one split leaves the others unchanged. ``out_dir`` must be empty, missing,
    or a dataset made by this function (its files are replaced).

    Args:
        out_dir: dataset folder.
        splits: split name -> :class:`SplitSize`; names become folders.
        config: look of the videos.
        seed: the dataset seed.
        workers: rendering processes; default: one per available CPU. The output does not depend on it.
        on_video: called in this process after each video is written (for progress bars).

    Raises:
        DataError: ``out_dir`` holds files that are not a vadpipe synthetic dataset.
    """
    root = Path(out_dir).absolute()
    if not splits:
        raise ConfigError("splits must name at least one split, e.g. {'train': SplitSize(normal=4, anomalous=4)}")
    for name in splits:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(f"split names must be plain folder names, got {name!r}")
    splits = {name: splits[name] for name in splits}
    _prepare_out_dir(root)
    codec = available_codec(config.codec)

    fixed = replace(config, codec=codec)  # every video of the set with the same encoder
    jobs: list[dict] = []
    for split_name, size in splits.items():
        split_key = zlib.crc32(split_name.encode())
        kind_offset = int(np.random.default_rng([seed, split_key, 2]).integers(len(config.anomaly_kinds)))
        for index in range(size.normal + size.anomalous):
            anomalous = index >= size.normal
            rng = np.random.default_rng([seed, split_key, 1, index])
            n_frames = int(rng.integers(config.n_frames[0], config.n_frames[1] + 1))
            anomaly = None
            if anomalous:
                # Cycle through the kinds so that small sets still show each of them.
                kind = config.anomaly_kinds[(kind_offset + index - size.normal) % len(config.anomaly_kinds)]
                anomaly = sample_anomaly(n_frames, config=config, rng=rng, kind=kind)
            stem = f"synth_{split_name}_{index:03d}_label_{anomaly.kind if anomaly else 'A'}"
            label_dir = root / split_name / ("anomalous" if anomalous else "normal")
            label_dir.mkdir(parents=True, exist_ok=True)
            jobs.append(
                dict(path=label_dir / f"{stem}.mp4", n_frames=n_frames, anomaly=anomaly, config=fixed,
                     seed=int(rng.integers(2**63)), split=split_name)
            )

    planned = [
        {"stem": j["path"].stem, "path": j["path"].relative_to(root).as_posix(), "split": j["split"]} for j in jobs
    ]
    _write_manifest(root, config=config, seed=seed, splits=splits, videos=planned, complete=False)

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    workers = min(workers, len(jobs))
    videos: list[VideoTruth | None] = [None] * len(jobs)

    def finished(i: int, truth: VideoTruth) -> None:
        videos[i] = truth
        if on_video is not None:
            on_video(truth)

    if workers > 1:
        try:
            _render_in_processes(jobs, workers, finished)
        except BrokenProcessPool as exc:
            warnings.warn(
                f"rendering processes failed ({exc}); rendering the rest in this process. A script that calls "
                "make_dataset with workers > 1 needs an `if __name__ == '__main__':` guard",
                RuntimeWarning,
                stacklevel=2,
            )
    for i, job in enumerate(jobs):
        if videos[i] is None:
            finished(i, render_video(**job))
    for p in root.glob("*/*/.*"):  # temp files of workers that died
        if _is_temp(p):
            p.unlink(missing_ok=True)

    dataset = SynthDataset(root=root, config=config, seed=seed, splits=splits, videos=tuple(videos))
    _write_metadata(dataset)
    return dataset


def _render_job(job: dict) -> VideoTruth:
    return render_video(**job)


def _render_in_processes(jobs: list[dict], workers: int, finished: Callable[[int, VideoTruth], None]) -> None:
    # "spawn": the caller may hold threads (torch, a progress bar) that fork would copy mid-flight.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_render_job, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                finished(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def load_dataset(root: str | os.PathLike) -> SynthDataset:
    """Read a dataset written by :func:`make_dataset` back from its ``manifest.json``.

    Raises:
        DataError: no manifest, a foreign or newer manifest, or listed videos that are missing.
    """
    root = Path(root).absolute()
    manifest = _read_manifest(root)
    if manifest is None:
        raise DataError(
            f"{root} is not a vadpipe synthetic dataset (no {root / 'manifest.json'}); make one with make_dataset"
        )
    if not manifest.get("complete"):
        raise DataError(
            f"the synthetic dataset in {root} is incomplete (its generation was interrupted); make it again"
        )
    videos = tuple(VideoTruth.from_dict(v, root=root) for v in manifest["videos"])
    missing = [str(v.path) for v in videos if not v.path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} videos listed in {root / 'manifest.json'} are missing, e.g. {missing[0]}")
    splits = {name: SplitSize(**s) for name, s in manifest["splits"].items()}
    return SynthDataset(
        root=root,
        config=SynthConfig.from_dict(manifest["config"]),
        seed=int(manifest["seed"]),
        splits=splits,
        videos=videos,
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _encode_atomic(path: Path, frames: Iterator[np.ndarray], *, codec: str, config: SynthConfig) -> None:
    """Encode ``frames`` into a temp file next to ``path``, then move it into place."""
    tmp = _new_temp(path)
    try:
        with av.open(str(tmp), mode="w", format=None if path.suffix else "mp4") as container:
            # One encoder thread: x264's output depends on the thread count, and the same seed must
            # give the same bytes on any machine (with the same PyAV build).
            if codec == "libx264":
                # ultrafast: 2-3x cheaper than veryfast; at crf 18 the files are still near-lossless.
                options = {"crf": "18", "preset": "ultrafast", "threads": "1"}
                stream = container.add_stream(codec, rate=config.fps, options=options)
            else:
                stream = container.add_stream(codec, rate=config.fps)
                stream.bit_rate = int(0.25 * config.width * config.height * config.fps)  # ~0.25 bit per pixel
            stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
            stream.thread_count = 1
            stream.codec_context.time_base = Fraction(1, config.fps)
            for index, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                frame.time_base = Fraction(1, config.fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_temp(path: Path) -> Path:
    """A new empty file next to ``path`` (same suffix, hidden), created with the permissions a plain
    ``open()`` gives, to be filled and then moved onto ``path`` with ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _new_temp(path)
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_manifest(
    root: Path, *, config: SynthConfig, seed: int, splits: Mapping[str, SplitSize], videos: list[dict], complete: bool
) -> None:
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "generator": _GENERATOR,
        "vadpipe_version": __version__,
        "complete": complete,  # false while generating: the videos are then only planned
        "seed": seed,
        "config": config.to_dict(),
        "splits": {name: asdict(size) for name, size in splits.items()},
        "annotations": "annotations.txt",
        "labels": "labels.csv",
        "videos": videos,
    }
    _write_text_atomic(root / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def _write_metadata(dataset: SynthDataset) -> None:
    """annotations.txt and labels.csv, then the complete manifest."""
    ordered = sorted(dataset.videos, key=lambda v: v.stem)
    annotations = "".join(
        f"{v.stem} " + " ".join(f"{s} {e}" for s, e in v.intervals) + "\n" for v in ordered if v.label == 1
    )
    _write_text_atomic(dataset.annotations_path, annotations)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "label"])
    writer.writerows([v.stem, v.label] for v in ordered)
    _write_text_atomic(dataset.labels_path, buf.getvalue())
    _write_manifest(
        dataset.root, config=dataset.config, seed=dataset.seed, splits=dataset.splits,
        videos=[v.to_dict(root=dataset.root) for v in dataset.videos], complete=True,
    )


def _read_manifest(root: Path) -> dict | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("generator") != _GENERATOR:
        raise DataError(f"{path} was not written by {_GENERATOR}; refusing to use or overwrite {root}")
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise DataError(
            f"{path} has schema_version {manifest.get('schema_version')!r}; "
            f"this vadpipe reads {MANIFEST_SCHEMA_VERSION}"
        )
    return manifest


def _prepare_out_dir(root: Path) -> None:
    """Refuse a folder with foreign content; clear a previous (maybe interrupted) synthetic dataset
    so that no stale video survives. Its manifest stays until the new one replaces it, so an
    interrupted clean-up can be rerun."""
    if not root.exists():
        root.mkdir(parents=True)
        return
    if not root.is_dir():
        raise DataError(f"{root} exists and is not a folder")
    manifest = _read_manifest(root)
    if manifest is None:
        if any(root.iterdir()):
            raise DataError(
                f"{root} is not empty and holds no vadpipe synthetic dataset; choose an empty or new folder"
            )
        return
    ours = {(root / v["path"]).resolve() for v in manifest["videos"]}
    stale: list[Path] = []
    for name in manifest["splits"]:
        for label_dir in (root / name / "normal", root / name / "anomalous"):
            for p in sorted(label_dir.iterdir()) if label_dir.is_dir() else ():
                if p.resolve() in ours or _is_temp(p):
                    stale.append(p)
                else:
                    raise DataError(
                        f"{p} is not part of the synthetic dataset in {root}; remove it or choose another folder"
                    )
    for p in stale:
        p.unlink(missing_ok=True)
    for name in ("annotations.txt", "labels.csv"):
        (root / name).unlink(missing_ok=True)
    for name in manifest["splits"]:
        for d in (root / name / "normal", root / name / "anomalous", root / name):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _is_temp(path: Path) -> bool:
    """A temp file of ``_new_temp`` left by a killed run: ``.<stem>.<8 hex>.tmp<suffix>``."""
    parts = path.name.split(".")
    return path.name.startswith(".") and len(parts) >= 4 and parts[-2] == "tmp" and len(parts[-3]) == 8


# --------------------------------------------------------------------------------------------
# Scene: background, stage, per-frame light and noise
# --------------------------------------------------------------------------------------------

_PALETTES = (  # (ground, tile line, wall) RGB
    ((150, 146, 138), (96, 92, 88), (176, 160, 140)),  # concrete plaza
    ((168, 120, 96), (110, 78, 64), (150, 150, 158)),  # brick pavers
    ((104, 106, 110), (70, 72, 76), (190, 180, 160)),  # asphalt
    ((176, 164, 132), (128, 118, 92), (120, 130, 140)),  # sandstone
)


@dataclass(frozen=True)
class _Scene:
    background: np.ndarray  # (H, W, 3) float32
    noise: np.ndarray  # (K, H, W, 3) float32 sensor noise fields (grey), +0.5 for rounding
    stage: tuple[float, float, float, float]  # x0, y0, x1, y1: where feet may go
    fig_px: float  # standing figure height at the front (y = y1)

    @staticmethod
    def create(config: SynthConfig, rng: np.random.Generator) -> _Scene:
        w, h = config.width, config.height
        background = _make_background(w, h, rng)
        # The region I3D's centre crop sees, in source pixels.
        scale = _VIEW_SHORT_SIDE_PX / min(w, h)
        view_w, view_h = min(w, _VIEW_CROP_PX / scale), min(h, _VIEW_CROP_PX / scale)
        vx0, vy0 = (w - view_w) / 2, (h - view_h) / 2
        fig_px = config.figure_height * h
        # Feet stay far enough inside the view that heads and limbs do too.
        stage = (vx0 + 0.3 * fig_px, vy0 + 1.05 * fig_px, vx0 + view_w - 0.3 * fig_px, vy0 + view_h - 0.08 * fig_px)
        if stage[2] - stage[0] < fig_px or stage[3] - stage[1] < 0.5 * fig_px:
            raise ConfigError(
                f"figure_height {config.figure_height} leaves no room to walk in a {w}x{h} frame; "
                "use a smaller figure_height"
            )
        noise = np.repeat((rng.normal(0.0, 1.6, size=(4, h, w, 1)) + 0.5).astype(np.float32), 3, axis=3)
        return _Scene(background=background, noise=noise, stage=stage, fig_px=fig_px)

    def scale_at(self, y: np.ndarray) -> np.ndarray:
        """Figure height in px at feet row ``y``: perspective, 70% at the back of the stage."""
        y0, y1 = self.stage[1], self.stage[3]
        return self.fig_px * (0.7 + 0.3 * np.clip((y - y0) / (y1 - y0), 0.0, 1.0))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma, mode="wrap")
    return (field / (field.std() + 1e-8)).astype(np.float32)


def _make_background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    ground, line, wall = (np.array(c, np.float32) for c in _PALETTES[int(rng.integers(len(_PALETTES)))])
    ground = ground * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    wall = wall * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    horizon = h * rng.uniform(0.1, 0.16)
    img = np.empty((h, w, 3), np.float32)

    # Ground: perspective paving (ground coordinates gx, gz from a pinhole camera), per-tile shade,
    # mortar lines anti-aliased by their width in pixels, blotches and grain.
    f = h * 0.9
    dy = np.maximum(ys - horizon, 1.0)
    gz = f / dy * 10.0
    gx = (xs - w * rng.uniform(0.4, 0.6)) * gz / f
    tile = rng.uniform(2.0, 4.0)
    u, v = gx / tile, gz / tile
    shade_table = rng.normal(0.0, 0.05, size=(17, 19)).astype(np.float32)
    tile_shade = shade_table[np.floor(v).astype(np.int64) % 17, np.floor(u).astype(np.int64) % 19]
    px_per_u = f / gz * tile  # pixels per tile unit along x
    px_per_v = dy * dy / (f * 10.0) * tile  # pixels per tile unit along y
    du = np.abs(u - np.round(u)) * px_per_u
    dv = np.abs(v - np.round(v)) * px_per_v
    mortar = np.clip(1.2 - np.minimum(du, dv), 0.0, 1.0)[..., None]
    blotch = _smooth_noise(rng, h, w, max(h, w) / 20)[..., None]
    grain = rng.normal(0.0, 1.0, (h, w, 1)).astype(np.float32)
    g = ground * (1.0 + tile_shade[..., None] + 0.06 * blotch) + 5.0 * grain
    g = g * (1 - 0.7 * mortar) + line * 0.7 * mortar
    img[:] = g

    # Facade above the horizon: wall, a row of windows, a darker base line.
    facade = ys < horizon
    win_w, win_h = w * rng.uniform(0.04, 0.07), horizon * 0.45
    pitch = win_w * rng.uniform(1.6, 2.4)
    in_window = (np.mod(xs - rng.uniform(0, pitch), pitch) < win_w) & (np.abs(ys - horizon * 0.45) < win_h / 2)
    wall_tex = wall * (1.0 + 0.04 * _smooth_noise(rng, h, w, 3.0)[..., None]) + 3.0 * grain
    window = np.array([52, 60, 72], np.float32) + 30.0 * np.clip((horizon * 0.45 - ys) / win_h + 0.5, 0, 1)[..., None]
    fac = np.where(in_window[..., None], window, wall_tex)
    fac = np.where((ys > horizon - 3)[..., None], wall * 0.55, fac)
    img = np.where(facade[..., None], fac, img)

    # Static structures on the ground: planters (boxes) and lamp posts, kept mostly at the sides.
    for _ in range(int(rng.integers(2, 5))):
        cx = w * (rng.uniform(0.02, 0.22) if rng.random() < 0.5 else rng.uniform(0.78, 0.98))
        base = rng.uniform(horizon + 0.15 * h, h * 0.98)
        s = (base - horizon) / (h - horizon)
        if rng.random() < 0.5:  # planter: box with a lighter top and some greenery
            bw, bh = w * 0.09 * s + 4, h * 0.07 * s + 3
            box = (np.abs(xs - cx) < bw / 2) & (ys > base - bh) & (ys < base)
            top = box & (ys < base - bh * 0.65)
            colour = np.array(_PALETTES[int(rng.integers(len(_PALETTES)))][2], np.float32) * 0.8
            img = np.where(box[..., None], colour, img)
            leaves = np.array([56, 104, 48], np.float32) * (1.0 + 0.25 * _smooth_noise(rng, h, w, 1.5)[..., None])
            img = np.where(top[..., None], leaves, img)
        else:  # lamp post: thin dark pole with a lamp head
            pole_h = h * 0.45 * s + 10
            pole = (np.abs(xs - cx) < max(1.0, 1.5 * s)) & (ys > base - pole_h) & (ys < base)
            lamp = (np.abs(xs - cx) < 3 + 3 * s) & (np.abs(ys - (base - pole_h)) < 1.5 + 2 * s)
            img = np.where(pole[..., None], np.float32(45), img)
            img = np.where(lamp[..., None], np.array([230, 226, 200], np.float32), img)

    # Mild vignetting, as with a cheap surveillance lens.
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
    img *= (1.0 - 0.12 * r2)[..., None]
    return np.clip(img, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Figures and motion
# --------------------------------------------------------------------------------------------

_SKIN = np.array([[233, 196, 160], [205, 150, 110], [160, 110, 75], [110, 72, 48], [245, 210, 180]], np.float32)


@dataclass(frozen=True)
class _Figures:
    shirt: np.ndarray  # (N, 3)
    trousers: np.ndarray  # (N, 3)
    skin: np.ndarray  # (N, 3)
    size: np.ndarray  # (N,) height multiplier (people differ in height)

    @staticmethod
    def create(n: int, rng: np.random.Generator) -> _Figures:
        hue = rng.uniform(0, 1, n)
        sat = rng.uniform(0.45, 0.9, n)
        val = rng.uniform(0.45, 0.95, n)
        shirt = _hsv_to_rgb(hue, sat, val) * 255
        trouser_hue = rng.choice([0.6, 0.08, 0.0, 0.33], n) + rng.normal(0, 0.02, n)
        trousers = _hsv_to_rgb(trouser_hue % 1.0, rng.uniform(0.1, 0.6, n), rng.uniform(0.15, 0.45, n)) * 255
        skin = _SKIN[rng.integers(len(_SKIN), size=n)]
        return _Figures(
            shirt.astype(np.float32), trousers.astype(np.float32), skin, rng.uniform(0.88, 1.1, n).astype(np.float32)
        )


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


@dataclass(frozen=True)
class _Tracks:
    """Per frame and figure (arrays ``(T, N)``): feet position, size and pose parameters."""

    x: np.ndarray
    y: np.ndarray
    h_px: np.ndarray  # standing height in pixels (perspective x personal size)
    facing: np.ndarray  # +1 right, -1 left
    tilt: np.ndarray  # body rotation about the feet, radians, positive = towards facing
    phase: np.ndarray  # gait phase, radians
    leg_amp: np.ndarray  # leg swing amplitude, radians
    flail: np.ndarray  # (T, N, 4) extra angles: near arm, far arm, near leg, far leg
    light: np.ndarray  # (T,) global brightness (clouds, auto-exposure)


@dataclass
class _Step:
    """The simulator's arrays for one frame, which an anomaly plan reads and overrides in place."""

    pos: np.ndarray  # (N, 2) feet positions
    target: np.ndarray  # (N, 2) current waypoints
    desired: np.ndarray  # (N, 2) wanted velocity, px/frame
    h_px: np.ndarray  # (N,) figure heights at their positions
    sprint_speed: np.ndarray  # (N,) figure heights per second
    want_tilt: np.ndarray  # (N,)
    want_flail: np.ndarray  # (N, 4)
    gait: np.ndarray  # (N,) leg swing at full speed, radians
    stride: np.ndarray  # (N,) figure heights per gait cycle
    accel: np.ndarray  # (N,) share of the velocity difference closed per frame
    pinned: np.ndarray  # (N,) bool: position set directly in new_pos instead of by velocity
    new_pos: np.ndarray  # (N, 2)
    facing: np.ndarray  # (N,)
    fps: float
    stage_lo: np.ndarray
    stage_hi: np.ndarray
    rng: np.random.Generator

    def random_points(self, k: int) -> np.ndarray:
        return self.stage_lo + self.rng.uniform(size=(k, 2)) * (self.stage_hi - self.stage_lo)

    def sprint_to(self, idx: np.ndarray, goal: np.ndarray) -> None:
        """Figures ``idx`` run flat out towards ``goal`` ``(len(idx), 2)``, leaning forward."""
        d = goal - self.pos[idx]
        dist = np.linalg.norm(d, axis=1)
        speed = np.minimum(self.sprint_speed[idx] * self.h_px[idx] / self.fps, dist)
        self.desired[idx] = d / (dist[:, None] + 1e-9) * speed[:, None]
        self.gait[idx], self.stride[idx], self.accel[idx] = 0.85, 1.4, 0.45
        self.want_tilt[idx] = 0.25

    def thrash(self, idx: np.ndarray, strength: float) -> None:
        """Random, fast-changing limb angles: flailing arms, kicking legs."""
        arms = self.rng.uniform(-2.8, 2.8, (len(idx), 2))
        legs = self.rng.uniform(-1.1, 1.1, (len(idx), 2))
        self.want_flail[idx] = strength * np.concatenate([arms, legs], axis=1)


def _simulate(
    n_frames: int, n: int, anomaly: Anomaly | None, scene: _Scene, config: SynthConfig, sizes: np.ndarray,
    rng: np.random.Generator,
) -> _Tracks:
    """Walk the figures between random waypoints, pausing now and then; inside the anomaly a plan
    overrides some of them.

    Speeds are in figure heights per second (walking 0.5-0.85, i.e. about 1-1.5 m/s; sprinting
    3-4.5), turned into pixels per frame with the perspective scale at each figure's position.
    """
    fps = float(config.fps)
    lo, hi = np.array(scene.stage[:2]), np.array(scene.stage[2:])

    def random_points(k: int) -> np.ndarray:
        return lo + rng.uniform(size=(k, 2)) * (hi - lo)

    def heights(p: np.ndarray) -> np.ndarray:
        return scene.scale_at(p[:, 1]) * sizes

    pos = random_points(n)
    target = random_points(n)
    walk_speed = rng.uniform(0.5, 0.85, n)
    sprint_speed = rng.uniform(3.0, 4.5, n)
    heading = (target - pos) / (np.linalg.norm(target - pos, axis=1, keepdims=True) + 1e-9)
    vel = heading * (walk_speed * heights(pos) / fps * rng.uniform(0.3, 1.0, n))[:, None]
    pause = _initial_pause(n, fps, rng)
    phase = rng.uniform(0, 2 * np.pi, n)
    facing = np.where(vel[:, 0] >= 0, 1.0, -1.0)
    tilt = np.zeros(n)
    flail = np.zeros((n, 4))
    leg_amp = np.full(n, 0.3)

    out = {k: np.empty((n_frames, n), np.float32) for k in ("x", "y", "h_px", "facing", "tilt", "phase", "leg_amp")}
    out_flail = np.empty((n_frames, n, 4), np.float32)
    plan: _Plan | None = None

    for t in range(n_frames):
        h_px = heights(pos)
        # Normal behaviour: walk to a waypoint, sometimes pause there, pick the next one.
        reached = np.linalg.norm(target - pos, axis=1) < 0.25 * h_px
        if reached.any():
            target[reached] = random_points(int(reached.sum()))
            stop = reached & (rng.random(n) < 0.3)
            pause[stop] = rng.integers(int(0.5 * fps), int(2.5 * fps) + 1, int(stop.sum()))
        walking = pause <= 0
        pause = np.maximum(pause - 1, 0)
        heading = (target - pos) / (np.linalg.norm(target - pos, axis=1, keepdims=True) + 1e-9)
        s = _Step(
            pos=pos, target=target, desired=heading * (np.where(walking, walk_speed, 0.0) * h_px / fps)[:, None],
            h_px=h_px, sprint_speed=sprint_speed, want_tilt=np.zeros(n), want_flail=np.zeros((n, 4)),
            gait=np.full(n, 0.45), stride=np.full(n, 0.85), accel=np.full(n, 0.12), pinned=np.zeros(n, bool),
            new_pos=pos.copy(), facing=facing, fps=fps, stage_lo=lo, stage_hi=hi, rng=rng,
        )
        tilt_rate = 0.5
        if anomaly is not None and anomaly.start_frame <= t < anomaly.end_frame:
            if plan is None:  # planned on the anomaly's first frame, from where everyone is then
                plan = _PLANS[anomaly.kind](pos, s)
            plan.step(t - anomaly.start_frame, anomaly.end_frame - anomaly.start_frame, s)
            tilt_rate = plan.tilt_rate
            if t == anomaly.end_frame - 1:
                # Afterwards everyone involved walks on to fresh waypoints, pausing as often as at
                # the start of a video, so that the aftermath looks normal and not like a stand-still.
                p = plan.participants
                target[p] = random_points(len(p))
                pause[p] = _initial_pause(len(p), fps, rng)

        # Move: accelerate towards the wanted velocity (brake harder, so anomalies end crisply).
        braking = np.linalg.norm(s.desired, axis=1) < np.linalg.norm(vel, axis=1)
        k = np.where(braking, np.maximum(s.accel, 0.35), s.accel)[:, None]
        vel = vel + k * (s.desired - vel)
        new_pos = np.clip(np.where(s.pinned[:, None], s.new_pos, pos + vel), lo, hi)
        moved = new_pos - pos
        vel = np.where(s.pinned[:, None], moved, vel)
        pos = new_pos
        step = np.linalg.norm(moved, axis=1)
        phase = phase + 2 * np.pi * step / (s.stride * h_px)
        speed_share = np.clip(step / (walk_speed * h_px / fps), 0.0, 1.0)
        leg_amp += 0.5 * (s.gait * speed_share - leg_amp)
        facing = np.where((np.abs(moved[:, 0]) > 0.15) & ~s.pinned, np.sign(moved[:, 0]), s.facing)
        tilt += tilt_rate * (s.want_tilt - tilt)
        flail += 0.55 * (s.want_flail - flail)

        out["x"][t], out["y"][t], out["h_px"][t] = pos[:, 0], pos[:, 1], h_px
        out["facing"][t], out["tilt"][t], out["phase"][t], out["leg_amp"][t] = facing, tilt, phase, leg_amp
        out_flail[t] = flail

    light_phase, light_period = rng.uniform(0, 2 * np.pi), rng.uniform(6, 14) * fps
    light = 1.0 + rng.uniform(0.0, 0.04) * np.sin(light_phase + 2 * np.pi * np.arange(n_frames) / light_period)
    return _Tracks(flail=out_flail, light=light.astype(np.float32), **out)


def _initial_pause(n: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Frames each of ``n`` figures still stands before walking: a quarter stand for up to 2 s."""
    return np.where(rng.random(n) < 0.25, rng.integers(1, int(2 * fps) + 1, n), 0)


class _Plan:
    """What one anomaly kind does to the figures, frame by frame inside ``[start, end)``."""

    tilt_rate = 0.5  # how fast body tilt follows its target
    participants: np.ndarray  # indices of the figures the anomaly takes over

    def step(self, rel: int, length: int, s: _Step) -> None:
        raise NotImplementedError


class _RunPlan(_Plan):
    """Half or more of the people sprint, zig-zagging to a new random spot every 0.25-0.6 s."""

    def __init__(self, pos: np.ndarray, s: _Step) -> None:
        n = len(pos)
        self.idx = np.sort(s.rng.choice(n, int(s.rng.integers(max(2, math.ceil(n / 2)), n + 1)), replace=False))
        self.participants = self.idx
        self.goal = np.zeros((len(self.idx), 2))
        self.retarget = np.zeros(len(self.idx), int)

    def step(self, rel: int, length: int, s: _Step) -> None:
        due = self.retarget <= rel
        if due.any():
            self.goal[due] = s.random_points(int(due.sum()))
            self.retarget[due] = rel + s.rng.integers(int(0.25 * s.fps), int(0.6 * s.fps) + 1, int(due.sum()))
        s.sprint_to(self.idx, self.goal)
        s.target[self.idx] = self.goal  # afterwards they walk on from where they were heading
        s.want_flail[self.idx, :2] = s.rng.uniform(-0.6, 0.6, (len(self.idx), 2))


class _ScatterPlan(_Plan):
    """Everyone flees a point in panic, arms raised, changing course every 0.4-0.9 s."""

    def __init__(self, pos: np.ndarray, s: _Step) -> None:
        lo, hi = s.stage_lo, s.stage_hi
        self.centre = lo + (hi - lo) * np.array([s.rng.uniform(0.3, 0.7), s.rng.uniform(0.0, 1.0)])
        self.idx = self.participants = np.arange(len(pos))
        self.goal = np.zeros((len(pos), 2))
        self.retarget = np.zeros(len(pos), int)

    def step(self, rel: int, length: int, s: _Step) -> None:
        due = self.retarget <= rel
        if due.any():
            # Of a few random spots, run for the one farthest from the source of panic.
            cand = s.random_points(6 * int(due.sum())).reshape(-1, 6, 2)
            far = np.argmax(np.linalg.norm(cand - self.centre, axis=2), axis=1)
            self.goal[due] = cand[np.arange(len(cand)), far]
            self.retarget[due] = rel + s.rng.integers(int(0.4 * s.fps), int(0.9 * s.fps) + 1, int(due.sum()))
        s.sprint_to(self.idx, self.goal)
        s.target[self.idx] = self.goal
        s.thrash(self.idx, 0.4)
        s.want_flail[self.idx, :2] += np.array([2.5, -2.5])


class _FightPlan(_Plan):
    """The closest two or three people rush together and brawl: circling, lunges, shoves, thrashing."""

    tilt_rate = 0.7

    def __init__(self, pos: np.ndarray, s: _Step) -> None:
        n = len(pos)
        d = np.linalg.norm(pos[:, None] - pos[None], axis=2) + np.eye(n) * 1e9
        a, b = (int(i) for i in np.unravel_index(np.argmin(d), d.shape))
        fighters = [a, b]
        if n >= 4 and s.rng.random() < 0.6:
            fighters.append(next(int(i) for i in np.argsort(d[a] + d[b]) if i not in fighters))
        self.idx = np.array(fighters)
        margin = np.array([0.5, 0.1]) * s.h_px.max()
        self.meet = np.clip(pos[self.idx].mean(axis=0), s.stage_lo + margin, s.stage_hi - margin)
        k = len(fighters)
        self.angle0 = s.rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(k) / k
        self.spin = s.rng.choice([-1.0, 1.0]) * s.rng.uniform(1.5, 3.0)  # circling, radians per second
        self.freq = s.rng.uniform(2.0, 4.0, k)  # lunges per second
        self.lunge_phase = s.rng.uniform(0, 2 * np.pi, k)
        self.engaged = np.zeros(k, bool)
        self.watchers = np.array([i for i in range(n) if i not in fighters and s.rng.random() < 0.5], int)
        self.participants = np.concatenate([self.idx, self.watchers])

    def step(self, rel: int, length: int, s: _Step) -> None:
        h = s.h_px[self.idx]
        seconds = rel / s.fps
        angles = self.angle0 + self.spin * seconds
        slot_dir = np.stack([np.cos(angles), 0.4 * np.sin(angles)], axis=1)
        slot = self.meet + slot_dir * (0.28 * h)[:, None]
        self.engaged |= np.linalg.norm(s.pos[self.idx] - slot, axis=1) < 0.25 * h
        e = self.engaged
        if (~e).any():
            s.sprint_to(self.idx[~e], slot[~e])
        if e.any():
            fi = self.idx[e]
            swing = np.sin(2 * np.pi * self.freq[e] * seconds + self.lunge_phase[e])
            lunge = -slot_dir[e] * (0.22 * h[e] * swing)[:, None]
            shove = s.rng.normal(0.0, 0.07, (len(fi), 2)) * h[e][:, None]
            s.new_pos[fi] = slot[e] + lunge + shove
            s.pinned[fi] = True
            s.facing[fi] = np.where(self.meet[0] >= slot[e][:, 0], 1.0, -1.0)
            s.thrash(fi, 1.0)
            s.want_tilt[fi] = s.rng.uniform(-0.5, 0.6, len(fi))
            s.gait[fi], s.stride[fi] = 0.8, 0.3  # short, stamping steps
            s.target[fi] = s.pos[fi]
        if len(self.watchers):  # some bystanders stop and stare
            s.desired[self.watchers] = 0.0


class _FallPlan(_Plan):
    """Someone topples over, writhes on the ground and gets up; the nearest people rush over and
    crouch around them, waving for help."""

    tilt_rate = 1.0

    def __init__(self, pos: np.ndarray, s: _Step) -> None:
        n = len(pos)
        self.faller = int(s.rng.integers(n))
        d = np.linalg.norm(pos - pos[self.faller], axis=1)
        d[self.faller] = np.inf
        self.helpers = np.argsort(d)[: min(int(s.rng.integers(2, 4)), n - 1)]
        self.participants = np.concatenate([[self.faller], self.helpers])
        side = np.where(np.arange(len(self.helpers)) % 2 == 0, 1.0, -1.0)
        self.helper_offset = np.stack([side * 0.55, np.linspace(-0.1, 0.1, len(self.helpers))], axis=1)
        # Topple towards the middle of the stage, so the body stays inside the view I3D sees.
        self.facing = 1.0 if pos[self.faller, 0] < (s.stage_lo[0] + s.stage_hi[0]) / 2 else -1.0

    def step(self, rel: int, length: int, s: _Step) -> None:
        fall = max(1, min(int(0.4 * s.fps), length // 3))  # frames to hit the ground
        rise = max(1, min(int(0.6 * s.fps), length // 4))  # frames to get up again
        f = np.array([self.faller])
        s.desired[f] = 0.0
        s.accel[f] = 0.3
        s.facing[f] = self.facing
        s.gait[f] = 0.0
        if rel < fall:  # accelerating rotation, like a toppling body
            angle = 0.5 * np.pi * ((rel + 1) / fall) ** 2
        elif rel < length - rise:  # on the ground, writhing and rolling
            angle = 0.5 * np.pi + s.rng.normal(0.0, 0.12)
            s.thrash(f, 1.0)
            roll = s.rng.normal(0.0, 0.05, 2) * [1.0, 0.3] * s.h_px[self.faller]
            s.new_pos[f] = np.clip(s.pos[f] + roll, s.stage_lo, s.stage_hi)
            s.pinned[f] = True
        else:  # getting up
            angle = 0.5 * np.pi * (1.0 - (rel - (length - rise) + 1) / rise)
        s.want_tilt[f] = angle
        if rel >= fall:
            goal = s.pos[self.faller] + self.helper_offset * s.h_px[self.helpers][:, None]
            goal = np.clip(goal, s.stage_lo, s.stage_hi)
            far = np.linalg.norm(s.pos[self.helpers] - goal, axis=1) > 0.15 * s.h_px[self.helpers]
            if far.any():
                s.sprint_to(self.helpers[far], goal[far])
            near = self.helpers[~far]
            if len(near):  # bend over the fallen body, arms waving
                body_x = s.pos[self.faller, 0] + self.facing * 0.45 * s.h_px[self.faller]
                s.facing[near] = np.where(body_x >= s.pos[near, 0], 1.0, -1.0)
                s.desired[near] = 0.0
                s.want_tilt[near] = s.rng.uniform(0.3, 0.8, len(near))
                s.thrash(near, 0.8)
            s.target[self.helpers] = s.pos[self.helpers]


_PLANS: dict[str, Callable[[np.ndarray, _Step], _Plan]] = {
    "run": _RunPlan,
    "fall": _FallPlan,
    "fight": _FightPlan,
    "scatter": _ScatterPlan,
}


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

# Body geometry in figure heights (standing figure, feet at the origin, v up, u forward).
_LEG, _ARM = 0.47, 0.32
_HIP_TO_SHOULDER, _HIP_TO_NECK, _HIP_TO_HEAD = 0.27, 0.30, 0.40
# Capsules in drawing order: far arm, far leg, near leg, torso, head, near arm.
_RADII = np.array([0.033, 0.045, 0.045, 0.085, 0.075, 0.033], np.float32)


def _draw_people(frame: np.ndarray, tracks: _Tracks, t: int, figures: _Figures) -> None:
    """Draw every figure of frame ``t`` onto ``frame`` (float32, modified in place).

    All shadows go down first (they lie on the ground), then the figures back to front, each as
    soft-edged shaded capsules. The pixel maths runs once for all capsules of the frame on
    equally sized patches; only the compositing, which must follow the drawing order, loops.
    """
    order = np.argsort(tracks.y[t], kind="stable")
    a, b, radii, colours, shadows = (v[order] for v in _pose_capsules(tracks, t, figures))
    height, width = frame.shape[:2]

    cx, cy, rx, ry = (shadows[:, i, None, None] for i in range(4))
    lo, xs, ys = _patches(shadows[:, :2] - shadows[:, 2:], shadows[:, :2] + shadows[:, 2:])
    ellipse = ((xs[:, None, :] - cx) / rx) ** 2 + ((ys[:, :, None] - cy) / ry) ** 2
    # Per-channel copies: numpy multiplies same-shaped blocks several times faster than it broadcasts (h, w, 1).
    darken = np.repeat((1.0 - 0.35 * np.clip(2.0 * (1.0 - ellipse), 0.0, 1.0))[..., None], 3, axis=3)
    for k, (x0, y0) in enumerate(lo.tolist()):
        frame_part, patch_part = _crop(x0, y0, darken.shape[2], darken.shape[1], width, height)
        frame[frame_part] *= darken[k][patch_part]

    a, b = a.reshape(-1, 2), b.reshape(-1, 2)
    r = radii.reshape(-1)
    lo, xs, ys = _patches(np.minimum(a, b) - r[:, None], np.maximum(a, b) + r[:, None])
    d = b - a
    ax, ay, dx, dy = (v[:, None, None] for v in (a[:, 0], a[:, 1], d[:, 0], d[:, 1]))
    px, py = xs[:, None, :] - ax, ys[:, :, None] - ay  # (K, 1, w), (K, h, 1)
    along = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6), 0.0, 1.0)
    dist = np.sqrt((px - along * dx) ** 2 + (py - along * dy) ** 2)  # (K, h, w)
    r3 = r[:, None, None]
    alpha = np.clip(r3 + 0.5 - dist, 0.0, 1.0)
    shade = 1.0 - 0.3 * np.minimum(dist / r3, 1.0) ** 2  # rounder look: darker towards the rim
    # "over" compositing, premultiplied: pixel = pixel * (1 - alpha) + alpha * shade * colour
    paint = (alpha * shade)[..., None] * colours.reshape(-1, 1, 1, 3)
    keep = np.repeat((1.0 - alpha)[..., None], 3, axis=3)
    for k, (x0, y0) in enumerate(lo.tolist()):
        frame_part, patch_part = _crop(x0, y0, keep.shape[2], keep.shape[1], width, height)
        region = frame[frame_part]
        region *= keep[k][patch_part]
        region += paint[k][patch_part]


def _patches(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer top-left corners ``(K, 2)`` of equally sized patches covering boxes ``[lo, hi]``
    (one pixel of margin), and their pixel-centre coordinates ``xs (K, w)``, ``ys (K, h)``."""
    start = np.floor(lo).astype(np.int64) - 1
    size = (np.ceil(hi).astype(np.int64) + 1 - start).max(axis=0)
    xs = (start[:, 0, None] + np.arange(size[0])).astype(np.float32) + 0.5
    ys = (start[:, 1, None] + np.arange(size[1])).astype(np.float32) + 0.5
    return start, xs, ys


def _crop(x0: int, y0: int, w: int, h: int, width: int, height: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the frame and of a ``h x w`` patch placed at ``(x0, y0)``, cut to where they overlap
    (empty slices when they do not)."""
    fx0, fy0 = min(max(x0, 0), width), min(max(y0, 0), height)
    fx1, fy1 = max(min(x0 + w, width), fx0), max(min(y0 + h, height), fy0)
    return (slice(fy0, fy1), slice(fx0, fx1)), (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))


def _pose_capsules(tracks: _Tracks, t: int, figures: _Figures):
    """Capsule end points ``(N, 6, 2)`` x2, radii ``(N, 6)``, colours ``(N, 6, 3)`` and shadow ellipses ``(N, 4)``."""
    x, y, h = tracks.x[t], tracks.y[t], tracks.h_px[t]
    facing, tilt, phase, leg_amp = tracks.facing[t], tracks.tilt[t], tracks.phase[t], tracks.leg_amp[t]
    fl = tracks.flail[t]
    swing = leg_amp * np.sin(phase)
    n = len(x)
    zeros = np.zeros(n, np.float32)
    hip = np.stack([zeros, _LEG * np.cos(swing)], axis=1)  # the planted foot stays on the ground
    shoulder = hip + [0.0, _HIP_TO_SHOULDER]
    neck = hip + [0.0, _HIP_TO_NECK]
    head = hip + [0.0, _HIP_TO_HEAD]

    def limb(origin: np.ndarray, length: float, angle: np.ndarray) -> np.ndarray:
        return origin + length * np.stack([np.sin(angle), -np.cos(angle)], axis=1)

    arm_swing = 0.8 * swing
    starts = np.stack([shoulder, hip, hip, hip, head, shoulder], axis=1)  # (N, 6, 2) local
    ends = np.stack(
        [
            limb(shoulder, _ARM, arm_swing + fl[:, 1]),
            limb(hip, _LEG, -swing + fl[:, 3]),
            limb(hip, _LEG, swing + fl[:, 2]),
            neck,
            head,
            limb(shoulder, _ARM, -arm_swing + fl[:, 0]),
        ],
        axis=1,
    )

    def to_image(p: np.ndarray) -> np.ndarray:
        # Rotate by the tilt about the feet (forward = towards facing), scale, mirror, place.
        c, s = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
        u = p[..., 0] * c + p[..., 1] * s
        v = -p[..., 0] * s + p[..., 1] * c
        return np.stack([x[:, None] + facing[:, None] * u * h[:, None], y[:, None] - v * h[:, None]], axis=-1)

    shirt, trousers, skin = figures.shirt, figures.trousers, figures.skin
    colours = np.stack([0.8 * shirt, 0.8 * trousers, trousers, shirt, skin, shirt], axis=1).astype(np.float32)
    radii = _RADII[None, :] * h[:, None]
    lying = np.abs(np.sin(tilt))
    shadows = np.stack([x + facing * 0.45 * np.sin(tilt) * h, y, (0.14 + 0.42 * lying) * h, 0.045 * h], axis=1)
    f32 = np.float32
    return to_image(starts).astype(f32), to_image(ends).astype(f32), radii.astype(f32), colours, shadows.astype(f32)
