"""Wall time and peak memory of ``vadpipe detect`` on long generated videos.

Usage: python bench/detect.py [--minutes 2 10] [--model RUN_DIR] [--width 640 --height 360]

Each length runs in a fresh subprocess, so its peak RSS is its own. Frames stream through the
extractor clip by clip, so peak RSS should not grow with the video's length.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_video(path: Path, minutes: float, width: int, height: int, fps: int = 25) -> Path:
    import av

    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, size=(height, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(int(minutes * 60 * fps)):
            x = (3 * i) % width
            frame = np.ascontiguousarray(bg[:, x : x + width])
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def tiny_run(root: Path) -> Path:
    """A model trained for one epoch on random features: same cost profile as a real one."""
    from vadpipe.model.config import TrainConfig
    from vadpipe.model.train import train

    feats = root / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        label = "A" if i % 2 else "B1-0-0"
        np.save(feats / f"v{i}_label_{label}__0.npy", rng.normal(size=(30, 1024)).astype(np.float32))
    return train(feats, out_dir=root / "run", config=TrainConfig(epochs=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.0, 10.0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vadpipe-bench-") as tmp:
        root = Path(tmp)
        model = args.model or tiny_run(root)
        print(f"{'minutes':>8} {'frames':>8} {'clips':>6} {'wall s':>8} {'clips/s':>8} {'peak RSS MiB':>13}")
        for minutes in args.minutes:
            video = make_video(root / f"long-{minutes:g}min.mp4", minutes, args.width, args.height)
            cmd = [
                sys.executable,
                "-c",
                "import resource, sys; from vadpipe.cli import main\n"
                "try:\n    main()\nexcept SystemExit:\n    pass\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
                "detect",
                str(video),
                "--run",
                str(model),
                "--features",
                str(root / f"cache-{minutes:g}"),
                "--json",
                str(root / f"intervals-{minutes:g}.json"),
                "--device",
                args.device,
                "-q",
            ]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            peak_kib = int(proc.stderr.strip().splitlines()[-1])
            frames = int(minutes * 60 * 25)
            clips = frames // 16
            print(f"{minutes:8g} {frames:8d} {clips:6d} {wall:8.1f} {clips / wall:8.2f} {peak_kib / 1024:13.0f}")


if __name__ == "__main__":
    main()
