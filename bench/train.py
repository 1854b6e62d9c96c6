"""Training throughput: one epoch of the batched trainer vs the authors' one-sequence-at-a-time loop.

Usage: python bench/train.py [--videos 3954] [--crops 5] [--batch-size 8] [--max-batches N]
                             [--threads N] [--dir DIR] [--keep]

Builds an XD-Violence-sized synthetic training set on disk (by default 3,954 videos x 5 crops,
T from 5 to 1,200 clips, median ~100, float32 (T, 1024): about 10 GB; scale it with --videos),
then times the same epoch (same batches, views, model init and loss) twice, each in its own
process so that its peak memory (max RSS) is its own:

* batched: every view of a batch right-padded into one tensor, one forward (vadpipe's trainer);
* loop:    every view through the model on its own, as the official code does, then the same
           loss and one optimizer step per batch.

Goal: batched >= 10x faster on CPU. --max-batches times only the first N batches of the epoch
and extrapolates to the full epoch (the loop at full size takes hours on a laptop CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from vadpipe.model.data import open_training_set
from vadpipe.model.losses import csl_loss
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.samplers import Batch, iterate_batches
from vadpipe.model.train import TrainConfig, batch_loss, make_optimizer

XD_TRAIN_VIDEOS = 3954
ANOMALOUS_FRACTION = 1905 / 3954  # method.md §2: 48.2% violent


def clip_counts(n_videos: int, rng: np.random.Generator) -> np.ndarray:
    """T per video: log-normal around a median of 100 clips, clipped to [5, 1200], both ends present."""
    counts = np.clip(np.round(np.exp(rng.normal(math.log(100), 0.8, n_videos))), 5, 1200).astype(int)
    if n_videos >= 2:
        counts[0], counts[1] = 5, 1200
    return counts


def build_dataset(folder: Path, *, n_videos: int, n_crops: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    counts = clip_counts(n_videos, rng)
    folder.mkdir(parents=True, exist_ok=True)
    for i, n_clips in enumerate(counts):
        tag = "B1-0-0" if rng.random() < ANOMALOUS_FRACTION else "A"
        base = np.abs(rng.normal(0.0, 0.5, (int(n_clips), 1024))).astype(np.float32)
        for crop in range(n_crops):
            noise = rng.normal(0.0, 0.05, base.shape).astype(np.float32)
            np.save(folder / f"v{i:05d}_label_{tag}__{crop}.npy", np.abs(base + noise))
    return {"videos": n_videos, "crops": n_crops, "samples": n_videos * n_crops,
            "clips_median": float(np.median(counts)), "clips_min": int(counts.min()), "clips_max": int(counts.max()),
            "bytes": int(sum(p.stat().st_size for p in folder.glob("*.npy")))}


def looped_loss(model: CSLTAL, batch: Batch, *, config: TrainConfig):
    """The official code's way: each view alone through the model; then the same loss on the results."""
    n_samples, n_views = batch.labels.shape[0], batch.n_views
    lengths = batch.mask.sum(1).tolist()
    attention, scores = [], []
    for row in range(n_samples * n_views):
        out = model(batch.x[row : row + 1, : lengths[row // n_views]], with_tcam=False)
        attention.append(out.attention[0])
        scores.append(out.video_score[0])
    padded = pad_sequence(attention, batch_first=True).view(n_samples, n_views, -1)
    return csl_loss(padded, torch.stack(scores).view(n_samples, n_views), batch.labels, batch.mask, config=config.loss)


def worker(mode: str, folder: Path, *, batch_size: int, max_batches: int | None, seed: int) -> dict:
    """Time one epoch (or its first max_batches batches) in this process; print a JSON line."""
    config = TrainConfig(batch_size=batch_size, seed=seed)
    began = time.perf_counter()
    data = open_training_set(folder)
    scan_s = time.perf_counter() - began
    torch.manual_seed(seed)
    model = CSLTAL(ModelConfig(feature_dim=data.feature_dim))
    optimizer = make_optimizer(model, config=config)
    step = batch_loss if mode == "batched" else (lambda m, b, loss_config: looped_loss(m, b, config=config))

    # warm-up on a throw-away batch: the first Adam step and first kernels pay one-time costs
    warm = next(iterate_batches(data, config=config, epoch=0))
    optimizer.zero_grad()
    step(model, warm, loss_config=config.loss).total.backward()
    optimizer.step()

    n_total = math.ceil(len(data.items) / batch_size)
    n_batches, n_steps, padded = 0, 0, 0
    losses = []
    began = time.perf_counter()
    for batch in iterate_batches(data, config=config, epoch=1):
        optimizer.zero_grad(set_to_none=True)
        terms = step(model, batch, loss_config=config.loss)
        terms.total.backward()
        optimizer.step()
        losses.append(float(terms.total.detach()))
        n_batches += 1
        n_steps += terms.n_steps
        padded += batch.x.shape[0] * batch.x.shape[1]
        if max_batches is not None and n_batches >= max_batches:
            break
    seconds = time.perf_counter() - began
    return {"mode": mode, "batches": n_batches, "batches_per_epoch": n_total, "seconds": seconds,
            "epoch_seconds": seconds * n_total / n_batches, "steps": n_steps, "padding_efficiency": n_steps / padded,
            "scan_seconds": scan_s, "mean_loss": float(np.mean(losses)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=XD_TRAIN_VIDEOS, help="videos in the synthetic set")
    parser.add_argument("--crops", type=int, default=5, help="crops per video (each is one sample)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=None, help="time only this many batches, extrapolate")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the features (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated features")
    parser.add_argument("--worker", choices=["batched", "loop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker:
        result = worker(args.worker, args.dir, batch_size=args.batch_size, max_batches=args.max_batches, seed=args.seed)
        print(json.dumps(result))
        return

    folder = args.dir or Path(tempfile.mkdtemp(prefix="vadpipe-bench-train-"))
    try:
        began = time.perf_counter()
        info = build_dataset(folder, n_videos=args.videos, n_crops=args.crops, seed=args.seed)
        print(f"synthetic set: {info['videos']} videos x {info['crops']} crops = {info['samples']} samples, "
              f"T {info['clips_min']}..{info['clips_max']} (median {info['clips_median']:.0f}), "
              f"{info['bytes'] / 2**30:.2f} GiB, built in {time.perf_counter() - began:.0f} s", flush=True)
        results = {}
        for mode in ("batched", "loop"):
            cmd = [sys.executable, __file__, "--worker", mode, "--dir", str(folder),
                   "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
            if args.max_batches:
                cmd += ["--max-batches", str(args.max_batches)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            output = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = results[mode] = json.loads(output.splitlines()[-1])
            timed = ("one epoch" if r["batches"] == r["batches_per_epoch"]
                     else f"{r['batches']} of {r['batches_per_epoch']} batches")
            print(f"{mode:>8}: {r['seconds']:.1f} s for {timed} -> {r['epoch_seconds']:.1f} s/epoch, "
                  f"{r['steps'] / r['seconds']:.0f} steps/s, mean loss {r['mean_loss']:.6f}, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['threads']} threads", flush=True)
        b, lp = results["batched"], results["loop"]
        print(f"speed-up batched vs loop: {lp['epoch_seconds'] / b['epoch_seconds']:.2f}x (goal >= 10x); "
              f"padding efficiency of the batched tensors {b['padding_efficiency']:.0%} "
              f"(the model packs valid rows, so padding costs memory, not compute); "
              f"scan of the set {b['scan_seconds']:.1f} s")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
