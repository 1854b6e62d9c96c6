"""How close `vadpipe train --recipe paper`'s model step is to this CPU's fp32 matrix-product speed.

Usage: python bench/train_roofline.py [--dir DIR] [--videos 200] [--crops 5] [--max-batches 20] [--threads 1]

On bench/train.py's synthetic set (built in DIR if absent), for the first ``--max-batches``
batches of an epoch it counts the multiply-adds the step cannot avoid (the conv's 3 active taps
on each distinct row, forward and weight gradient; the attention head on every step, forward,
input and weight gradients; the small video-level products), times the step (`batch_loss`,
backward, fused Adam), and times a plain ``torch.mm`` of the conv's shape at the same thread
count. It prints the step's GFLOP/s against the product's: the share of the time that is
unavoidable fp32 arithmetic at this machine's speed. What is left above it is all a faster
trainer could remove without changing the numbers (bf16 products would change the losses).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from train import EPOCH, build_dataset  # noqa: E402

from vadpipe.model.labels import open_training_set  # noqa: E402
from vadpipe.model.net import CSLTAL  # noqa: E402
from vadpipe.model.samplers import iterate_batches  # noqa: E402
from vadpipe.model.train import batch_loss, make_optimizer  # noqa: E402
from vadpipe.recipes import RECIPES  # noqa: E402


def step_macs(batch, *, dim: int, taps: int, hidden: int = 256) -> int:
    """Multiply-adds of one training step that no trainer of this model can skip."""
    distinct = batch.rows.shape[0]
    steps = int(batch.mask.sum()) * batch.n_views
    sequences = batch.mask.shape[0] * batch.n_views
    conv = 2 * distinct * taps * dim * dim  # forward + weight gradient (the features need no gradient)
    head = 3 * steps * (dim * dim + dim * hidden + hidden)  # forward + input and weight gradients
    video = 3 * sequences * (distinct * dim + dim * 512 + 512)  # Σ λ_t x_t and the classifier, 3 ways
    return conv + head + video


def mm_gflops(rows: int, dim: int, cols: int, *, seconds: float = 3.0) -> float:
    a, b = torch.randn(rows, dim), torch.randn(dim, cols)
    out = torch.empty(rows, cols)
    torch.mm(a, b, out=out)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        torch.mm(a, b, out=out)
        done += 1
    return 2 * rows * dim * cols * done / (time.perf_counter() - began) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("bench-train"))
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--crops", type=int, default=5)
    parser.add_argument("--max-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.dir / "train").is_dir():
        build_dataset(args.dir / "train", n_videos=args.videos, n_crops=args.crops, seed=args.seed)
    data = open_training_set(args.dir / "train")
    config = RECIPES["paper"].training
    config = replace(config, model=replace(config.model, feature_dim=data.feature_dim))
    batches = [b for _, b in zip(range(args.max_batches), iterate_batches(data, config=config, epoch=EPOCH))]
    taps = config.model.kernel_size // 2 + 1
    macs = sum(step_macs(b, dim=data.feature_dim, taps=taps) for b in batches)
    torch.manual_seed(config.seed)
    model = CSLTAL(config.model)
    optimizer = make_optimizer(model, config=config)
    batch_loss(model, batches[0], loss_config=config.loss).total.backward()  # warm-up
    optimizer.zero_grad(set_to_none=True)
    began = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        batch_loss(model, batch, loss_config=config.loss).total.backward()
        optimizer.step()
    seconds = time.perf_counter() - began
    mean_rows = int(sum(b.rows.shape[0] for b in batches) / len(batches))
    peak = mm_gflops(mean_rows, data.feature_dim, taps * data.feature_dim)
    achieved = 2 * macs / seconds / 1e9
    print(f"{len(batches)} batches, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"unavoidable work: {2 * macs / 1e9:.1f} GFLOP in {seconds:.2f} s = {achieved:.1f} GFLOP/s")
    print(
        f"torch.mm ({mean_rows} x {data.feature_dim}) @ ({data.feature_dim} x {taps * data.feature_dim}): "
        f"{peak:.1f} GFLOP/s"
    )
    floor = 2 * macs / 1e9 / peak
    print(
        f"share of the step that is unavoidable fp32 arithmetic at that speed: {achieved / peak:.0%}; "
        f"a perfect fp32 trainer would take {floor:.2f} s ({seconds / floor:.2f}x less)"
    )


if __name__ == "__main__":
    main()
