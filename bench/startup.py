"""Where the seconds before the first clip go: imports, weights, network preparation, decoder, first batch.

Usage:
  python bench/startup.py [--video ../shared/media/bikes.mp4] [--runs 3]

Each run is a fresh Python process that times, in order: ``import torch``, vadpipe's extraction
imports (and says whether they pulled in torchvision, which costs ~2 CPU s and which
extraction no longer needs; ``--torchvision`` imports it first to show the old cost), reading and
verifying the weights (safetensors + sha256), preparing the network (BatchNorm folding,
channels-last), opening the video and preprocessing the first clip, and the first batch of one
clip through the network (oneDNN creates its kernels then). It also times the whole
``vadpipe extract VIDEO`` command into a fresh cache. Wall and CPU seconds are printed per
phase as the median over ``--runs``; on a shared machine the CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
marks = []
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
import torch; mark("import torch")
if "--torchvision" in sys.argv:
    import torchvision.transforms.v2; mark("import torchvision")
from pathlib import Path
from vadpipe.extract.decode import open_frames
from vadpipe.extract.encoder import ClipEncoder
from vadpipe.extract.transforms import crop_clip, resize_frame
from vadpipe.extract.weights import load_i3d
mark("import vadpipe extraction")
model, _ = load_i3d(); mark("weights read + verified")
enc = ClipEncoder(model, torch.device("cpu"), "fp32"); mark("network prepared")
frames = []
with open_frames(Path(sys.argv[1])) as (_, stream):
    for f in stream:
        frames.append(resize_frame(f.rgb))
        if len(frames) == 16:
            break
clip = crop_clip(torch.stack(frames), 224, "center"); mark("video opened + first clip preprocessed")
enc(clip); mark("first batch (1 clip) through I3D")
prev_t, prev_c = t0, c0
out = []
for name, t, c in marks:
    out.append((name, t - prev_t, c - prev_c)); prev_t, prev_c = t, c
print(json.dumps({"phases": out, "torchvision_imported": "torchvision" in sys.modules}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared" / "media" / "bikes.mp4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--torchvision", action="store_true", help="import torchvision first (the old start-up)")
    args = ap.parse_args()
    phases: dict[str, list[tuple[float, float]]] = {}
    imported = set()
    for _ in range(args.runs):
        cmd = [sys.executable, "-c", _CHILD, str(args.video)] + (["--torchvision"] if args.torchvision else [])
        out = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        imported.add(out["torchvision_imported"])
        for name, wall, cpu in out["phases"]:
            phases.setdefault(name, []).append((wall, cpu))
    vadpipe = Path(sys.executable).with_name("vadpipe")
    whole = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run(
                [str(vadpipe), "extract", str(args.video), "--features", tmp], check=True, capture_output=True
            )
            whole.append(time.perf_counter() - t)
    print(f"{args.video.name}, {args.runs} fresh processes each, load average {os.getloadavg()[0]:.1f} (1 min)")
    print(f"{'phase':42s} {'wall s':>7s} {'cpu s':>7s}")
    total_w = total_c = 0.0
    for name, values in phases.items():
        w = statistics.median(v[0] for v in values)
        c = statistics.median(v[1] for v in values)
        total_w, total_c = total_w + w, total_c + c
        print(f"{name:42s} {w:7.2f} {c:7.2f}")
    print(f"{'before the first feature':42s} {total_w:7.2f} {total_c:7.2f}")
    print(f"torchvision imported: {', '.join(map(str, sorted(imported)))}")
    print(f"{'vadpipe extract ' + args.video.name + ' (whole command)':42s} {statistics.median(whole):7.2f}")


if __name__ == "__main__":
    main()
