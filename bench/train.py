"""Training speed: `vadpipe train --recipe paper` against the authors' trainer, epoch and model step.

Usage: python bench/train.py [--videos 200] [--crops 5] [--repeats 3] [--max-batches N]
                             [--threads N] [--loader-workers 4] [--dir DIR] [--keep]

Builds a synthetic set in vadpipe's feature-cache format (records + ``<stem>__<crop>.npy``;
``--videos`` x ``--crops`` crop files, T from 5 to 1,200 clips, median ~100, log-normal like
XD-Violence, float32 (T, 1024); the defaults make 1,000 crop files, ~0.5 GB), then, for each
repeat, runs three things in their own processes, in alternating order so that the machine's load
falls on each alike, and prints wall and CPU seconds (with the DataLoader workers') and the ratios:

* ``vadpipe``:  the epoch of ``vadpipe train --recipe paper``: `train_epoch` (what
               `vadpipe.model.train` runs each epoch; its wall time is the run's ``time_s``) on the
               features read into memory once (`preload`), plus the checkpoint written after it.
* ``authors``: the authors' trainer as model/README.md §1-§4 describes it: a ``DataLoader``
               (``--loader-workers`` processes, 4 in their code) whose dataset ``np.load``\\s each
               crop file per sample and cuts its views; per view one forward of their model (the
               5-tap conv with its weight masked in place before every forward, the MLP head, the
               classifier on Σ λ_t x_t), the loss summed over views in Python, ``loss.item()``
               per step, ``torch.optim.Adam`` with its default (per-tensor) update. It starts from
               vadpipe's initial weights on the same batches and views, so its losses must equal
               vadpipe's: the bench prints both.
* ``batched``: vadpipe's model step alone (`batch_loss`, backward, fused Adam) on the same batches,
               already built, for the model-step ratio.

``--max-batches`` times only the first N batches of the authors' epoch (and of the batched model
step) and scales to the full epoch by the number of feature rows, which the work follows.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadpipe.extract.cache import CacheRecord, write_entry
from vadpipe.model.augment import view_indices
from vadpipe.model.config import TrainConfig
from vadpipe.model.data import FeatureSet, preload
from vadpipe.model.labels import open_training_set
from vadpipe.model.net import CSLTAL
from vadpipe.model.run import save_checkpoint
from vadpipe.model.samplers import epoch_batches, iterate_batches
from vadpipe.model.train import batch_loss, make_optimizer, train_epoch
from vadpipe.recipes import RECIPES

ANOMALOUS_FRACTION = 1905 / 3954  # model/README.md §2: 48.2% violent
EPOCH = 1  # the epoch whose batches the authors' loop and the batched step run (the CLI's first)


def clip_counts(n_videos: int, rng: np.random.Generator) -> np.ndarray:
    """T per video: log-normal around a median of 100 clips, clipped to [5, 1200], both ends present."""
    counts = np.clip(np.round(np.exp(rng.normal(math.log(100), 0.8, n_videos))), 5, 1200).astype(int)
    if n_videos >= 2:
        counts[0], counts[1] = 5, 1200
    return counts


def _record(stem: str, n_clips: int, n_crops: int) -> CacheRecord:
    return CacheRecord.from_dict(
        {
            "schema_version": 1,
            "stem": stem,
            "source": {"path": f"/videos/{stem}.mp4", "size": 1, "sha256": "0" * 64},
            "video": {
                "fps": 24.0,
                "n_frames": 16 * n_clips,
                "duration_s": 16 * n_clips / 24,
                "width": 640,
                "height": 360,
                "rotation": 0,
            },
            "clips": {
                "length": 16,
                "stride": 16,
                "count": n_clips,
                "start_frames": [16 * i for i in range(n_clips)],
                "start_s": [16 * i / 24 for i in range(n_clips)],
                "end_s": [16 * (i + 1) / 24 for i in range(n_clips)],
            },
            "crops": [f"crop{c}" for c in range(n_crops)],
            "extractor": {
                "settings": {"clip_len": 16, "stride": 16},
                "settings_key": "bench-train",
                "weights_sha256": "synthetic",
                "vadpipe_version": "bench",
            },
            "status": "ok",
            "error": None,
        }
    )


def build_dataset(folder: Path, *, n_videos: int, n_crops: int, seed: int) -> dict:
    """A feature cache as `vadpipe extract` writes it, with the extraction stage's own writer."""
    rng = np.random.default_rng(seed)
    counts = clip_counts(n_videos, rng)
    for i, n_clips in enumerate(int(n) for n in counts):
        stem = f"v{i:05d}_label_{'B1-0-0' if rng.random() < ANOMALOUS_FRACTION else 'A'}"
        base = np.abs(rng.normal(0.0, 0.5, (n_clips, 1024))).astype(np.float32)
        crops = [np.abs(base + rng.normal(0.0, 0.05, base.shape).astype(np.float32)) for _ in range(n_crops)]
        write_entry(folder, _record(stem, n_clips, n_crops), crops, np.arange(16 * n_clips) / 24.0)
    return {
        "videos": n_videos,
        "crops": n_crops,
        "files": n_videos * n_crops,
        "clips_median": float(np.median(counts)),
        "clips_mean": float(counts.mean()),
        "clips_min": int(counts.min()),
        "clips_max": int(counts.max()),
        "bytes": int(sum(p.stat().st_size for p in folder.glob("*.npy"))),
    }


# --------------------------------------------------------------------------- the authors' trainer


class AuthorsSTPN(nn.Module):
    """The authors' model.py: one (T', F) sequence per forward, a full 5-tap Conv1d whose weight is
    masked in place at the start of every forward, no activation, the MLP attention head, the
    classifier on Σ_t λ_t x_t of the raw features. Initialised from a vadpipe model."""

    def __init__(self, start: CSLTAL) -> None:
        super().__init__()
        dim, kernel = start.config.feature_dim, start.config.kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.attention = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 1)
        )
        self.classifier = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 1))
        mask = torch.zeros_like(self.conv.weight)
        mask[..., : kernel // 2 + 1] = 1.0
        self.register_buffer("mask", mask)
        self.load_state_dict({**start.state_dict(), "mask": mask})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.conv.weight.data *= self.mask
        hidden = self.conv(x.t().unsqueeze(0))[0].t()
        lam = torch.sigmoid(self.attention(hidden))[:, 0]
        return lam, torch.sigmoid(self.classifier((lam.unsqueeze(1) * x).sum(0)))[0]


def authors_loss(
    model: AuthorsSTPN, views: list[list[torch.Tensor]], labels: list[int], *, config: TrainConfig
) -> torch.Tensor:
    """model/README.md §3 written out over the views: BCE mean over views, sparsity and smoothness summed
    over views, alignment a mean over t summed over samples, all divided by the batch's steps N."""
    w = config.loss
    bce = sparsity = smoothness = alignment = 0.0
    n_steps = n_views = 0
    for sample, label in zip(views, labels):
        lams = []
        for view in sample:
            lam, score = model(view)
            bce = bce + F.binary_cross_entropy(score, torch.tensor(float(label)))
            sparsity = sparsity + lam.abs().sum()
            smoothness = smoothness + (lam[1:] - lam[:-1]).square().sum()
            lams.append(lam)
            n_steps, n_views = n_steps + view.shape[0], n_views + 1
        if len(lams) == 2:
            alignment = alignment + (lams[0] - lams[1]).square().mean()
    return (bce / n_views + w.w_smooth * smoothness + w.w_sparsity * sparsity + w.w_align * alignment) / n_steps


class AuthorsDataset(torch.utils.data.Dataset):
    """Their XD_Violence dataset: np.load of the crop file per sample, then the views (drawn here
    in advance from vadpipe's generator, so that both trainers see the same views)."""

    def __init__(self, data: FeatureSet, order: list[int], views: list[np.ndarray]) -> None:
        self.paths = [str(data.items[i].path) for i in order]
        self.labels = [int(data.items[i].label) for i in order]
        self.views = views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        features = np.load(self.paths[index])
        return [torch.from_numpy(features[rows]) for rows in self.views[index]], self.labels[index]


def _zip(samples: list) -> tuple[list, list]:
    return [s[0] for s in samples], [s[1] for s in samples]


def epoch_plan(data: FeatureSet, config: TrainConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The batches (sample indices) and every sample's views of epoch EPOCH, drawn exactly as
    `iterate_batches` draws them."""
    rng = np.random.default_rng([config.seed, EPOCH])
    labels = [item.label for item in data.items]
    batches = epoch_batches(labels, batch_size=config.batch_size, balanced=config.balanced, rng=rng)
    views = [
        view_indices(
            data.items[i].n_steps, n_views=config.n_views, block_len=config.block_len, rng=rng, mode=config.views
        )
        for batch in batches
        for i in batch
    ]
    return batches, views


def _rows(batch_views: list[np.ndarray]) -> int:
    return sum(v.size for v in batch_views)


def run_authors(data: FeatureSet, config: TrainConfig, *, max_batches: int | None, workers: int) -> dict:
    batches, views = epoch_plan(data, config)
    order = [int(i) for batch in batches for i in batch]
    torch.manual_seed(config.seed)
    model = AuthorsSTPN(CSLTAL(config.model))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n_timed = len(batches) if max_batches is None else min(max_batches, len(batches))
    sizes = [len(b) for b in batches[:n_timed]]
    sampler = [list(range(sum(sizes[:i]), sum(sizes[: i + 1]))) for i in range(n_timed)]
    dataset = AuthorsDataset(data, order, views)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=_zip)
    spare = copy.deepcopy(model)  # warm-up on a copy: the first step's one-time kernel set-up, not timed
    authors_loss(spare, *_zip([dataset[i] for i in sampler[0]]), config=config).backward()
    torch.optim.Adam(spare.parameters(), lr=config.lr).step()
    losses, model_s, model_cpu = [], 0.0, 0.0
    began, cpu = time.perf_counter(), _cpu()
    for sample_views, labels in loader:  # creating the iterator starts the workers, as every epoch does
        step_began, step_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        loss = authors_loss(model, sample_views, labels, config=config)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        model_s += time.perf_counter() - step_began
        model_cpu += time.process_time() - step_cpu
    seconds, cpu = time.perf_counter() - began, _cpu() - cpu  # the workers have finished: their CPU counts
    scale = _rows(views) / _rows(views[: sum(sizes)])
    return {
        "batches": n_timed,
        "batches_per_epoch": len(batches),
        "seconds": seconds,
        "epoch_s": seconds * scale,
        "epoch_cpu": cpu * scale,
        "model_s": model_s * scale,
        "model_cpu": model_cpu * scale,
        "losses": losses,
        "workers": workers,
    }


def run_batched(data: FeatureSet, config: TrainConfig, *, max_batches: int | None) -> dict:
    """vadpipe's model step alone, on the same (already built) batches."""
    batches, views = epoch_plan(data, config)
    n_timed = len(batches) if max_batches is None else min(max_batches, len(batches))
    built = [b for _, b in zip(range(n_timed), iterate_batches(data, config=config, epoch=EPOCH))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = CSLTAL(config.model)
    spare = copy.deepcopy(model)  # warm-up on a copy, as for the authors' loop
    batch_loss(spare, built[0], loss_config=config.loss).total.backward()
    make_optimizer(spare, config=config).step()
    optimizer = make_optimizer(model, config=config)
    losses = []
    began, cpu = time.perf_counter(), time.process_time()
    for batch in built:
        optimizer.zero_grad(set_to_none=True)
        terms = batch_loss(model, batch, loss_config=config.loss)
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.detach())
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    scale = _rows(views) / _rows(views[: sum(len(b) for b in batches[:n_timed])])
    return {
        "batches": n_timed,
        "model_s": seconds * scale,
        "model_cpu": cpu * scale,
        "losses": [float(v) for v in losses],
    }


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the DataLoader's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_vadpipe(data: FeatureSet, config: TrainConfig) -> dict:
    """The epoch of `vadpipe train --recipe paper`: `train_epoch` on the features read into memory
    once (`preload`), as `vadpipe.model.train` runs it (its wall time is the run's ``time_s``), then
    the checkpoint written after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = CSLTAL(config.model)
    optimizer = make_optimizer(model, config=config)
    features = preload(data)
    began, cpu = time.perf_counter(), _cpu()
    line = train_epoch(model, optimizer, data, config=config, epoch=EPOCH)
    epoch_s, epoch_cpu = time.perf_counter() - began, _cpu() - cpu
    with tempfile.TemporaryDirectory(prefix="vadpipe-bench-run-") as tmp:
        began, cpu = time.perf_counter(), _cpu()
        save_checkpoint(Path(tmp), epoch=EPOCH, model=model, optimizer=optimizer)
        checkpoint_s, checkpoint_cpu = time.perf_counter() - began, _cpu() - cpu
    return {
        "epoch_s": epoch_s,
        "epoch_cpu": epoch_cpu,
        "checkpoint_s": checkpoint_s,
        "checkpoint_cpu": checkpoint_cpu,
        "loss": line["loss"],
        "in_memory": features is not None,
    }


def worker(mode: str, folder: Path, *, max_batches: int | None, workers: int) -> dict:
    data = open_training_set(folder)
    config = RECIPES["paper"].training
    config = replace(config, model=replace(config.model, feature_dim=data.feature_dim))
    if mode == "vadpipe":
        return run_vadpipe(data, config)
    if mode == "authors":
        return run_authors(data, config, max_batches=max_batches, workers=workers)
    return run_batched(data, config, max_batches=max_batches)


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=200, help="videos in the synthetic set")
    parser.add_argument("--crops", type=int, default=5, help="crops per video (each is one sample)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="time only this many batches of the authors' loop and the model step, scale to the epoch",
    )
    parser.add_argument("--loader-workers", type=int, default=4, help="DataLoader workers of the authors' loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the features (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated features")
    parser.add_argument("--worker", choices=["vadpipe", "authors", "batched"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.dir, max_batches=args.max_batches, workers=args.loader_workers)))
        return

    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    root = Path(tempfile.mkdtemp(prefix="vadpipe-bench-train-"))
    folder = args.dir or root / "features"
    try:
        if not any(folder.glob("*.json")):
            began = time.perf_counter()
            info = build_dataset(folder, n_videos=args.videos, n_crops=args.crops, seed=args.seed)
            print(
                f"synthetic cache: {info['videos']} videos x {info['crops']} crops = {info['files']} crop files, "
                f"T {info['clips_min']}..{info['clips_max']} (median {info['clips_median']:.0f}, mean "
                f"{info['clips_mean']:.0f}), {info['bytes'] / 2**30:.2f} GiB, built in "
                f"{time.perf_counter() - began:.0f} s",
                flush=True,
            )
        common = ["--dir", str(folder), "--loader-workers", str(args.loader_workers)]
        common += ["--max-batches", str(args.max_batches)] if args.max_batches else []
        common += ["--threads", str(args.threads)] if args.threads else []

        def sub(mode: str) -> dict:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", mode, *common],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            return json.loads(out.splitlines()[-1])

        rows = []
        for repeat in range(args.repeats):
            got = {}
            for mode in ("vadpipe", "authors", "batched") if repeat % 2 == 0 else ("batched", "authors", "vadpipe"):
                before = _load()
                got[mode] = {**sub(mode), "load": before}
            ours, authors, batched = got["vadpipe"], got["authors"], got["batched"]
            n = min(len(authors["losses"]), len(batched["losses"]))
            diff = max(abs(a - b) / abs(b) for a, b in zip(authors["losses"][:n], batched["losses"][:n]))
            row = {
                "epoch_s": (authors["epoch_s"], ours["epoch_s"] + ours["checkpoint_s"]),
                "epoch_cpu": (authors["epoch_cpu"], ours["epoch_cpu"] + ours["checkpoint_cpu"]),
                "model_s": (authors["model_s"], batched["model_s"]),
                "model_cpu": (authors["model_cpu"], batched["model_cpu"]),
            }
            rows.append(row)
            timed = (
                "one epoch"
                if authors["batches"] == authors["batches_per_epoch"]
                else f"{authors['batches']} of {authors['batches_per_epoch']} batches, scaled by rows"
            )
            print(
                f"repeat {repeat + 1}: vadpipe's epoch (--recipe paper, features in memory: {ours['in_memory']}) "
                f"{ours['epoch_s']:.1f} s wall / {ours['epoch_cpu']:.1f} CPU s + checkpoint "
                f"{ours['checkpoint_s']:.1f} s ({ours['load']}); authors' trainer ({authors['workers']} loader "
                f"workers, {timed}) {authors['epoch_s']:.1f} s / {authors['epoch_cpu']:.1f} CPU s per epoch, "
                f"model steps {authors['model_s']:.1f} s / {authors['model_cpu']:.1f} CPU s ({authors['load']}); "
                f"vadpipe's model steps {batched['model_s']:.1f} s / {batched['model_cpu']:.1f} CPU s "
                f"({batched['load']}); per-batch losses, authors' vs vadpipe's: max relative difference "
                f"{diff:.1e} over {n} batches",
                flush=True,
            )
        for key, name in (
            ("epoch_s", "epoch, wall"),
            ("epoch_cpu", "epoch, CPU seconds"),
            ("model_s", "model step, wall"),
            ("model_cpu", "model step, CPU seconds"),
        ):
            ratios = [a / b for a, b in (r[key] for r in rows)]
            print(
                f"{name}: authors' / vadpipe's = median {statistics.median(ratios):.1f}x "
                f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x over {len(rows)} repeats; goal >= 10x)"
            )
        print(f"threads {torch.get_num_threads() if not args.threads else args.threads}; now {_load()}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
