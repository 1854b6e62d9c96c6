"""Extraction throughput: decode+preprocess alone, the network alone, and end to end per engine.

Usage:
  python bench/extract.py [VIDEO] [--device auto] [--precision fp32[,bf16]] [--batch-size 8]
                          [--decode-procs 0[,1,4,all]] [--devices 0,1] [--engine local|ray] [--address auto]
                          [--seconds 20] [--size 640x360] [--copies 1]

Without VIDEO a test video is generated (PyAV, ``--size``, 25 fps, ``--seconds`` long); ``--copies``
extracts that many copies of it (the worker engine decodes one video per worker, so several
videos are needed to use several workers). Every combination of ``--precision`` and
``--decode-procs`` is one row (with ``--engine ray``, the value caps the video tasks in flight): clips/s end to end (clips computed / compute-loop time, after a
warm-up run), its share of the network-alone figure, and the share of the loop the network
waited for input. The 1-minute load average is printed, since a shared machine skews figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vadpipe.executor_choice import choose_executor
from vadpipe.extract.decode import open_frames
from vadpipe.extract.devices import parse_devices
from vadpipe.extract.encoder import ClipEncoder, select_device
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.procs import usable_cpus
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
    """Clips/s of the network alone on synthetic input: the best of ``n_batches`` batches (the
    ceiling; on a shared machine the mean mostly measures the other jobs)."""
    x = torch.randint(0, 255, (batch_size, 3, 16, 224, 224), dtype=torch.uint8)
    encoder(x)  # warm-up (cudnn autotune, allocator)
    best = float("inf")
    for _ in range(n_batches):
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        encoder(x)
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return batch_size / best


def _workers_list(text: str) -> list[int | None]:
    """``0,1,4,all`` -> [0, 1, 4, cores - 1]; ``auto`` -> None (the engine's default)."""
    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        out.append(None if item == "auto" else max(1, usable_cpus() - 1) if item == "all" else int(item))
    return out


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load unknown"
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {usable_cpus()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16,fp16")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--decode-procs",
        default="0",
        help="comma-separated decode process counts; all = cores - 1 "
        "(Ray: video tasks in flight, 0 = the cluster's CPUs)",
    )
    ap.add_argument("--devices", default=None, help="one process per device, e.g. 0,1 or cpu,cpu")
    ap.add_argument("--engine", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None, help="Ray cluster (with --engine ray)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the generated video")
    ap.add_argument("--size", default="640x360", help="WxH of the generated video, e.g. 1280x720")
    ap.add_argument("--copies", type=int, default=1, help="extract this many copies of the video")
    ap.add_argument("--net-batches", type=int, default=3)
    args = ap.parse_args()

    device = select_device(args.device)
    n_dev = len(parse_devices(args.devices)) if args.devices else 1
    if args.engine == "ray":  # one Ray session for the warm-up and every row
        from vadpipe.extract.ray_tasks import import_ray

        import_ray().init(address=args.address, include_dashboard=False if args.address is None else None)
    model, ident = load_i3d(device=device)
    precisions = args.precision.split(",")
    workers_list = _workers_list(args.decode_procs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        width, height = (int(v) for v in args.size.lower().split("x"))
        video = args.video or make_video(tmp / "bench.mp4", args.seconds, width, height)
        videos = tmp / "videos"
        videos.mkdir()
        for i in range(args.copies):
            shutil.copy(video, videos / f"v{i:03d}{video.suffix}")
        warm = make_video(tmp / "warm.mp4", 0.7, 96, 64)  # starts processes, actors, cudnn autotune
        settings = ExtractionSettings().with_weights(ident)
        fps, n = bench_decode(video, settings)
        clips = n // settings.clip_len
        print(
            f"device {device}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
            f"video {video.name} {width}x{height}: {n} frames, {clips} clips x {args.copies}; {_load()}"
        )
        print(f"decode+preprocess alone (1 process): {fps:8.1f} frames/s = {fps / settings.clip_len:7.2f} clips/s")
        print(
            f"{'engine / what':45s} {'precision':9s} {'workers':>7s} {'clips/s':>9s} "
            f"{'of net alone':>12s} {'net waited':>10s} {'net busy':>8s}"
        )
        for precision in precisions:
            encoder = ClipEncoder(model, device, precision)
            net = bench_network(encoder, args.batch_size, args.net_batches)
            print(f"{'network alone (synthetic input, one device)':45s} {precision:9s} {'-':>7s} {net:9.2f}")
            for workers in workers_list:
                s = ExtractionSettings(precision=precision)
                ray = args.engine == "ray"
                executor = choose_executor(
                    engine=args.engine,
                    devices=args.devices,
                    address=args.address,
                    device=None if ray or args.devices else args.device,
                    decode_processes=None if ray else workers,
                    ray_tasks=(workers or None) if ray else None,
                )
                common = dict(settings=s, batch_size=args.batch_size, executor=executor, progress=False)
                extract_videos([warm], out_dir=tmp / "warm-cache", **common)
                shutil.rmtree(tmp / "warm-cache")
                report = extract_videos([videos], out_dir=tmp / "cache", **common)
                shutil.rmtree(tmp / "cache")
                # devices: the timings are summed over the device processes, which run side by side
                e2e = report.clips_computed * n_dev / max(report.loop_s, 1e-9)
                busy = report.network_s / max(report.loop_s, 1e-9)
                where = f"{args.engine} end to end on {args.devices or device}"
                print(
                    f"{where:45s} {precision:9s} "
                    f"{'auto' if workers is None else workers:>7} {e2e:9.2f} {e2e / (net * n_dev):12.0%} "
                    f"{report.input_wait_share:10.0%} {busy:8.0%}"
                )
        print(f"after: {_load()}")


if __name__ == "__main__":
    main()
