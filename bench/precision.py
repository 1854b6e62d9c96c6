"""The I3D network on this CPU/GPU: fp32 as loaded, fp32 with BatchNorm folded, bf16, and OpenVINO on CPUs.

Usage:
  python bench/precision.py [--device cpu] [--batch-size 8] [--repeats 3] [--video ../shared/media/bikes.mp4]

Runs the variants interleaved (A, B, C, A, B, C, ...) on the video's first 8 centre-crop clips
(padded to the batch size by repetition), and prints per variant the best wall seconds per
clip, the process CPU seconds per clip (less sensitive to other jobs on a shared machine than
wall time), the ratio to fp32, and the minimum cosine of its 8 features against plain fp32 and,
when ``../shared/reference/i3d/bikes_feats.npy`` is there, against the original network.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from vadpipe.errors import ConfigError
from vadpipe.extract.decode import open_frames
from vadpipe.extract.encoder import ClipEncoder, select_device
from vadpipe.extract.inference import cpu_has_native_bf16
from vadpipe.extract.transforms import crop_clip, resize_frame, to_unit_range
from vadpipe.extract.weights import load_i3d

REPO = Path(__file__).resolve().parents[1]


def first_clips(video: Path, n: int = 8) -> torch.Tensor:
    frames = []
    with open_frames(video) as (_, stream):
        for frame in stream:
            frames.append(resize_frame(frame.rgb))
            if len(frames) == n * 16:
                break
    return torch.stack([crop_clip(torch.stack(frames[i * 16 : (i + 1) * 16]), 224, "center")[0] for i in range(n)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared" / "media" / "bikes.mp4")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    device = select_device(args.device)
    model, _ = load_i3d(device="cpu")
    clips = first_clips(args.video)
    batch = clips[torch.arange(args.batch_size) % len(clips)]

    @torch.inference_mode()
    def unfolded(x: torch.Tensor) -> np.ndarray:  # the network as loaded: BN as separate layers
        net = unfolded.net
        y = to_unit_range(x.to(device)).contiguous(memory_format=torch.channels_last_3d)
        return net.forward_features(y).float().cpu().numpy()

    unfolded.net = model.to(device).to(memory_format=torch.channels_last_3d).eval()
    variants = {"fp32 unfolded": unfolded, "fp32": ClipEncoder(model, device, "fp32")}
    bf16 = device.type == "cuda" or cpu_has_native_bf16()
    if bf16:
        variants["bf16"] = ClipEncoder(model, device, "bf16")
    else:
        print("bf16: not offered on this CPU (no AVX512-BF16/AMX-BF16)")
    if device.type == "cpu":
        try:
            variants["openvino fp32"] = ClipEncoder(model, device, "fp32", runtime="openvino")
            if bf16:
                variants["openvino bf16"] = ClipEncoder(model, device, "bf16", runtime="openvino")
        except ConfigError as exc:
            print(f"openvino: {exc}")
    for fn in variants.values():  # warm-up: oneDNN/cuDNN primitive creation
        fn(batch[:2])
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    out = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            out[name] = fn(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall[name].append((time.perf_counter() - t) / len(batch))
            cpu[name].append((time.process_time() - c) / len(batch))
    ref_path = REPO.parent / "shared" / "reference" / "i3d" / "bikes_feats.npy"
    reference = np.load(ref_path) if ref_path.exists() else None
    load = os.getloadavg()[0]
    print(
        f"device {device}, batch {args.batch_size}, threads {torch.get_num_threads()}, "
        f"{args.repeats} interleaved repeats, load average {load:.1f} (1 min)"
    )
    print(
        f"{'variant':15s} {'wall s/clip':>11s} {'cpu s/clip':>10s} {'wall vs fp32':>12s} {'cpu vs fp32':>11s} "
        f"{'cos vs fp32':>11s} {'cos vs original':>15s}"
    )
    base_w, base_c = min(wall["fp32"]), min(cpu["fp32"])
    rows = []
    for name in variants:
        feats = out[name][: len(clips)]
        row = {
            "variant": name,
            "wall_s_per_clip": min(wall[name]),
            "cpu_s_per_clip": min(cpu[name]),
            "wall_vs_fp32": min(wall[name]) / base_w,
            "cpu_vs_fp32": min(cpu[name]) / base_c,
            "cos_vs_fp32": float(cosines(feats, out["fp32"][: len(clips)]).min()),
            "cos_vs_original": float(cosines(feats, reference).min()) if reference is not None else None,
        }
        rows.append(row)
        c_ref = f"{row['cos_vs_original']:15.6f}" if reference is not None else f"{'-':>15s}"
        print(
            f"{name:15s} {row['wall_s_per_clip']:11.3f} {row['cpu_s_per_clip']:10.3f} {row['wall_vs_fp32']:12.2f} "
            f"{row['cpu_vs_fp32']:11.2f} {row['cos_vs_fp32']:11.6f} {c_ref}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": str(device), "batch_size": args.batch_size, "load_1min": load, "variants": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
