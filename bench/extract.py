"""Extraction throughput: decode+preprocess alone, the network alone, and end to end.

Usage: python bench/extract.py [VIDEO] [--device auto] [--precision fp32] [--batch-size 8] [--seconds 20]

Without VIDEO a 640x360 25 fps test video is generated (PyAV). End to end should come within
~15% of the network alone when decoding is overlapped with the network.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vadpipe.extract.decode import open_frames
from vadpipe.extract.runner import ClipEncoder, extract_paths, select_device
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.extract.transforms import crop_clip, resize_frame
from vadpipe.extract.weights import load_i3d


def make_video(path: Path, seconds: float, width: int = 640, height: int = 360, fps: int = 25) -> Path:
    import av

    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast"}
        for i in range(int(seconds * fps)):
            frame = np.roll(bg, 4 * i, axis=1)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def bench_decode(video: Path, settings: ExtractionSettings) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    window = []
    with open_frames(video, backend=settings.decoder) as (_, frames):
        for f in frames:
            window.append(resize_frame(f.rgb, settings.resize_short))
            n += 1
            if len(window) == settings.clip_len:
                crop_clip(torch.stack(window), settings.crop_size, settings.crops)
                window = []
    return n / (time.perf_counter() - t), n


def bench_network(encoder: ClipEncoder, batch_size: int, n_batches: int) -> float:
    x = torch.randint(0, 255, (batch_size, 3, 16, 224, 224), dtype=torch.uint8)
    encoder(x)  # warm-up (cudnn autotune, allocator)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n_batches):
        encoder(x)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * n_batches / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the generated video")
    ap.add_argument("--net-batches", type=int, default=3)
    args = ap.parse_args()

    device = select_device(args.device)
    model, ident = load_i3d(device=device)
    encoder = ClipEncoder(model, device, args.precision)
    settings = ExtractionSettings(precision=args.precision).with_weights(ident)
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or make_video(Path(tmp) / "bench.mp4", args.seconds)
        fps, n = bench_decode(video, settings)
        clips = n // settings.clip_len
        print(f"device {device}, precision {args.precision}, batch {args.batch_size}, torch threads "
              f"{torch.get_num_threads()}, video {video.name}: {n} frames, {clips} clips")
        print(f"decode+preprocess alone : {fps:8.1f} frames/s = {fps / settings.clip_len:7.2f} clips/s")
        net = bench_network(encoder, args.batch_size, args.net_batches)
        print(f"network alone           : {net:8.2f} clips/s (synthetic input)")
        t = time.perf_counter()
        report = extract_paths([video], out_dir=Path(tmp) / "cache", settings=settings, encoder=encoder,
                               batch_size=args.batch_size, progress=False)
        e2e = report.clips_computed / (time.perf_counter() - t)
        print(f"end to end              : {e2e:8.2f} clips/s ({e2e / net:.0%} of the network alone)")


if __name__ == "__main__":
    main()
