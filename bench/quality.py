"""Detection quality across seeds on the three development sets (issue 18).

Usage: python bench/quality.py [--dir bench-quality] [--sets long short real] [--seeds 1 2 3 4 5]
                               [--variants default paper paper-noalign] [--jobs 2] [--json OUT]

For every set (bench/quality_sets.py: ``long`` synthetic, ``short`` synthetic, ``real``
time-edited real footage) and every variant, trains one run per seed exactly as
``vadpipe train`` does (`train_calibrated` with the recipe's calibration), evaluates it as
``vadpipe evaluate`` does on the set's test videos (standard protocol: every clip, crops
averaged), and prints mean, min and max over seeds of frame AUC, frame AP, interval F1 at IoU
0.3 at the run's operating point and the normal test videos flagged. On ``long`` it adds the
supervised linear probe's AP (bench/long_videos.py's ceiling) and each seed's share of it.

Trainings run ``--jobs`` at a time, one thread each. The runs stay under DIR/SET/runs/.

Variants: ``default`` is the default recipe as ``vadpipe train`` runs it (four members cross-fitted
on four folds, `vadpipe.ensemble_training`), ``default-single`` the same with one member
(``--ensemble 1``), ``paper`` and ``paper-noalign`` the authors' recipe, ``default-align`` one
member with ``--align``, ``default-align-x4`` four cross-fitted members with ``--align``. A run
folder holding finished members of an unfinished ensemble is finished, not retrained.

``--ensembles K`` also scores, per set and variant, the K-member ensembles of consecutive seeds
(cyclically: with seeds 1-5 and K = 3, {1,2,3}, {2,3,4}, ..., {5,1,2}) of the runs just trained,
through the same `score_video` (`vadpipe.model.ensemble.Ensemble`): frame AUC and AP only, since
those runs were trained with different held-out splits and have no common operating point
(``vadpipe train --ensemble K`` cross-fits its members and calibrates their mean on every
training video, each scored by the member that held it out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from quality_sets import BenchSet, build  # noqa: E402

from vadpipe.calibrated_training import train_calibrated  # noqa: E402
from vadpipe.postprocess.evaluate import evaluate_run, json_ready  # noqa: E402
from vadpipe.recipes import RECIPES  # noqa: E402

# name -> (recipe, training overrides, loss overrides, members: None = the recipe's)
VARIANTS: dict[str, tuple[str, dict, dict, int | None]] = {
    "default": ("default", {}, {}, None),
    "default-single": ("default", {}, {}, 1),
    "paper": ("paper", {}, {}, None),
    "paper-noalign": ("paper", {"align": False}, {}, None),
    "default-align": ("default", {"align": True}, {}, 1),
    "default-align-x4": ("default", {"align": True}, {}, None),
}


def variant_recipe(name: str, seed: int):
    recipe, training, loss, members = VARIANTS[name]
    return RECIPES[recipe].replaced(training={**training, "seed": seed}, loss=loss or None, ensemble=members)


def run_one(bench: BenchSet, runs: Path, variant: str, seed: int, reuse: bool = False) -> dict:
    out = runs / f"{variant}-s{seed}"
    done = out / "bench_seconds.json"
    chosen = variant_recipe(variant, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if reuse and (out / "ood.safetensors").is_file():  # a finished run of an earlier invocation
            run = out
            seconds = json.loads(done.read_text())["train_s"] if done.is_file() else float("nan")
        else:
            if out.exists() and not (out / "members").is_dir():  # an unfinished ensemble keeps its finished
                shutil.rmtree(out)  # members, as vadpipe train --out does
            began = time.perf_counter()
            run = train_calibrated(
                bench.train,
                out_dir=out,
                config=chosen.training,
                calibration=chosen.calibration,
                ensemble=chosen.ensemble,
                jobs=1,
            )
            seconds = time.perf_counter() - began
            done.write_text(json.dumps({"train_s": seconds}))
        report = evaluate_run(run, bench.test, bench.test_annotations, protocol="standard")
    detection = report["detection"]
    return {
        "set": bench.name,
        "variant": variant,
        "seed": seed,
        "train_s": round(seconds, 1),
        "frame_auc": report["frame"]["auc"],
        "frame_ap": report["frame"]["ap"],
        "interval_f1": detection["intervals"]["iou_0.3"]["f1"],
        "normal_flagged": detection["normal_videos_flagged"],
        "normal_videos": detection["normal_videos"],
        "anomalous_flagged": detection["anomalous_videos_flagged"],
        "anomalous_videos": detection["anomalous_videos"],
    }


def posthoc_ensembles(bench: BenchSet, runs: Path, variant: str, seeds: list[int], size: int) -> list[dict]:
    from vadpipe.model.data import scan_features
    from vadpipe.model.ensemble import Ensemble
    from vadpipe.model.labels import parse_annotations
    from vadpipe.model.run import load_run
    from vadpipe.postprocess.evaluate import evaluate_model

    loaded = {seed: load_run(runs / f"{variant}-s{seed}") for seed in seeds}
    features = scan_features(bench.test, split="test")
    truth = parse_annotations(bench.test_annotations)
    rows = []
    for i in range(len(seeds)):
        chosen = [seeds[(i + k) % len(seeds)] for k in range(size)]
        model = Ensemble([loaded[s].model for s in chosen]).eval()
        report = evaluate_model(
            model, features, truth, protocol="standard", block_len=loaded[chosen[0]].config.block_len
        )
        rows.append(
            {
                "set": bench.name,
                "variant": f"{variant} x{size}",
                "seeds": chosen,
                "frame_auc": report["frame"]["auc"],
                "frame_ap": report["frame"]["ap"],
            }
        )
    return rows


def _job(args: tuple) -> dict:
    torch.set_num_threads(1)
    return run_one(*args)


def _mmm(values: list[float]) -> str:
    return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def table(rows: list[dict], probes: dict[str, float]) -> str:
    lines = [
        f"{'set':<6} {'variant':<16} {'n':>2}  {'frame AUC mean [min, max]':<27} {'frame AP mean [min, max]':<27}"
        f" {'AP max-min':>10} {'min AP/probe':>12}  {'F1@0.3 mean [min, max]':<27} {'normal flagged':<16}"
        f" {'train s':>7}"
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["variant"]), []).append(row)
    for (name, variant), group in groups.items():
        ap = [r["frame_ap"] for r in group]
        probe = probes.get(name)
        ratio = f"{min(ap) / probe:.0%}" if probe else "-"
        flagged = f"{sum(r['normal_flagged'] for r in group)}/{sum(r['normal_videos'] for r in group)}"
        lines.append(
            f"{name:<6} {variant:<16} {len(group):>2}  {_mmm([r['frame_auc'] for r in group]):<27} "
            f"{_mmm(ap):<27} {max(ap) - min(ap):>10.3f} {ratio:>12}  "
            f"{_mmm([r['interval_f1'] for r in group]):<27} {flagged:<16} "
            f"{np.mean([r['train_s'] for r in group]):>7.0f}"
        )
    for name, ap in probes.items():
        lines.append(f"{name:<6} {'linear probe':<16}     supervised ceiling: frame AP {ap:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("bench-quality"))
    parser.add_argument("--sets", nargs="+", default=["long", "short", "real"], choices=["long", "short", "real"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--variants", nargs="+", default=["default", "paper", "paper-noalign"], choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2, help="trainings side by side, one thread each")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate finished runs of an earlier invocation instead of training them again",
    )
    parser.add_argument(
        "--ensembles",
        type=int,
        default=0,
        help="also score post-hoc ensembles of this many consecutive seeds (0: none)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    sets = {}
    for name in args.sets:
        try:
            sets[name] = build(args.dir.absolute(), name)
        except SystemExit as exc:  # e.g. the real footage is absent: say so, run the others
            print(f"{name}: {exc}", flush=True)
    probes = {}
    if "long" in sets:
        from long_videos import probe_ceiling

        from vadpipe.model.labels import parse_annotations

        s = sets["long"]
        probes["long"] = probe_ceiling(
            s.train, s.test, parse_annotations(s.train_annotations), parse_annotations(s.test_annotations), seed=0
        )["frame_ap"]
    jobs = [
        (s, args.dir.absolute() / s.name / "runs", v, seed, args.reuse)
        for s in sets.values()
        for v in args.variants
        for seed in args.seeds
    ]
    print(f"{len(jobs)} trainings, {args.jobs} at a time", flush=True)
    rows = []
    with ProcessPoolExecutor(max(1, min(args.jobs, len(jobs)))) as pool:
        for row in pool.map(_job, jobs):
            rows.append(row)
            print(
                f"  {row['set']:<6} {row['variant']:<16} s{row['seed']}  AUC {row['frame_auc']:.3f} "
                f"AP {row['frame_ap']:.3f}  F1 {row['interval_f1']:.3f}  normal flagged "
                f"{row['normal_flagged']}/{row['normal_videos']}  [{row['train_s']:.0f} s]",
                flush=True,
            )
    print()
    print(table(rows, probes))
    ensembles = []
    if args.ensembles > 1:
        torch.set_num_threads(max(1, args.jobs))
        for s in sets.values():
            for v in args.variants:
                ensembles += posthoc_ensembles(s, args.dir.absolute() / s.name / "runs", v, args.seeds, args.ensembles)
        print("\npost-hoc ensembles of consecutive seeds (frame AUC / AP; no operating point):")
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in ensembles:
            groups.setdefault((row["set"], row["variant"]), []).append(row)
        for (name, variant), group in groups.items():
            ap = [r["frame_ap"] for r in group]
            probe = probes.get(name)
            print(
                f"{name:<6} {variant:<16} {len(group):>2}  AUC {_mmm([r['frame_auc'] for r in group])}  "
                f"AP {_mmm(ap)}  max-min {max(ap) - min(ap):.3f}"
                + (f"  min AP/probe {min(ap) / probe:.0%}" if probe else "")
            )
    print(f"\ntotal {(time.perf_counter() - began) / 60:.1f} min; load {os.getloadavg()[0]:.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(json_ready({"runs": rows, "probes": probes, "ensembles": ensembles}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
