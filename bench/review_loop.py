"""One round of the review loop measured on the demo's data: detect -> report -> verdicts -> train again.

    python bench/review_loop.py --demo vadpipe-work/demo [--seeds 0,1,2] [--pool 5,5] [--test 6,6]
        [--min-steps 1500] [--work bench-review]

``--demo`` is a `vadpipe demo` folder: its ``features/train`` (the demo's 24 training videos,
real I3D features) is the labelled training set. Per seed ``s``:

1. ``vadpipe train`` on the demo's training features with the default recipe and ``--seed s``
   (as the demo trains): the run *before* review.
2. A pool of new, unlabelled videos: `vadpipe.synth.make_dataset` with seed ``1000 + s`` (disjoint
   from the demo's seed 0 and the test set's), moved to one flat folder under neutral names
   (``new<s>_<i>.mp4``), so nothing but the verdicts can label them.
3. ``vadpipe detect NEW --run RUN0 --features FEATURES --report REVIEW``: the pool's features land
   beside the training ones, and the report is written.
4. A reviewer simulated from the generator's ground truth goes through the **report's real
   pages in Debian's chromium** (Playwright): every flagged video is opened, each interval gets
   *anomaly* when it overlaps the true anomalous frames and *false alarm* otherwise, and the
   video gets its true label (*normal* / *anomalous*). The index then exports ``labels.csv``
   with *count unreviewed videos without intervals as normal* ticked (the README's loop), and
   ``annotations.txt``. Unflagged anomalous videos thus enter training as normal: the label
   noise a real loop has too.
5. ``vadpipe train --labels OLD+VERDICTS`` on the training + pool features, same seed: the run
   *after* review.
6. Both runs are evaluated (`vadpipe.postprocess.evaluate.evaluate_run`, what ``vadpipe evaluate``
   runs) on one fresh test set (seed ``--test-seed``, shared by all seeds, extracted once):
   frame AP, normal videos flagged (false alarms) and anomalous videos flagged (found) at each
   run's own calibrated operating point.

Prints JSON on stdout (per seed, and mean / sd / min / max over seeds of before, after and the
paired difference); say the machine's load (uptime) when quoting a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vadpipe.model.labels import parse_annotations, read_labels_csv
from vadpipe.postprocess.evaluate import evaluate_run
from vadpipe.synth import SplitSize, SynthConfig, make_dataset

VADPIPE = [sys.executable, "-m", "vadpipe"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def vadpipe(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([*VADPIPE, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def page_data(path: Path) -> dict:
    text = path.read_text()
    return json.loads(
        text.split('<script id="report-data" type="application/json">', 1)[1]
        .split("</script>", 1)[0]
        .replace("<\\/", "</")
    )


def overlaps(iv: dict, truth: list[tuple[int, int]]) -> bool:
    return any(iv["start_frame"] < e and s < iv["end_frame"] for s, e in truth)


def review(report: Path, truth: dict[str, list[tuple[int, int]]], out: Path) -> dict:
    """Give the verdicts the ground truth implies on the report's pages in chromium; export both files."""
    from playwright.sync_api import sync_playwright

    index = page_data(report / "index.html")
    counts = {"pages": 0, "intervals_anomaly": 0, "intervals_false_alarm": 0}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        for video in index["videos"]:
            if not video["n_intervals"]:
                continue  # the reviewer opens the flagged videos only
            gt = truth[video["stem"]]
            page.goto((report / video["page"]).as_uri())
            counts["pages"] += 1
            for i, iv in enumerate(video["intervals"]):
                verdict = "anomaly" if overlaps(iv, gt) else "false_alarm"
                page.click(f'#intervals tr[data-index="{i}"] button.{verdict}')
                counts[f"intervals_{verdict}"] += 1
            page.click("#video-anomalous" if gt else "#video-normal")
        page.goto((report / "index.html").as_uri())
        page.check("#unflagged-normal")
        for button, name in (("#export-labels", "labels.csv"), ("#export-annotations", "annotations.txt")):
            with page.expect_download() as dl:
                page.click(button)
            dl.value.save_as(out / name)
        counts["verdict_counts"] = page.text_content("#verdict-counts")
        browser.close()
    return counts


def base_labels(features: Path) -> dict[str, int]:
    """The demo's training labels, from its XD-style stems (``_label_A`` = normal)."""
    stems = {p.stem for p in features.glob("*.json")}
    return {s: int("_label_A" not in s) for s in sorted(stems)}


def write_labels(path: Path, labels: dict[str, int]) -> None:
    path.write_text("video,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))


def scores(report: dict) -> dict:
    d = report["detection"]
    return {
        "frame_ap": report["frame"]["ap"],
        "normal_flagged": d["normal_videos_flagged"],
        "anomalous_found": d["anomalous_videos_flagged"],
        "threshold": report["threshold"],
        "video_threshold": report["video_threshold"],
    }


def make_pool(root: Path, seed: int, size: SplitSize) -> dict[str, list[tuple[int, int]]]:
    """New videos under neutral names in ``root/new``; returns stem -> true anomalous frames."""
    ds = make_dataset(root / "generated", splits={"pool": size}, config=SynthConfig(), seed=1000 + seed, workers=1)
    new = root / "new"
    new.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, v in enumerate(ds.split("pool")):
        stem = f"new{seed}_{i:02d}"
        shutil.move(str(v.path), new / f"{stem}.mp4")
        truth[stem] = list(v.intervals)
    shutil.rmtree(root / "generated")
    return truth


def one_seed(args, seed: int, test_features: Path, test_annotations: Path) -> dict:
    root = args.work / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():  # an unfinished seed starts over, except for a finished run before review
        if stale.name != "run0" or "operating_point" not in _config(stale):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    train = ["--seed", str(seed), "-q"] + (
        ["--set", f"min_steps={args.min_steps}"] if args.min_steps is not None else []
    )
    timings = {}
    if not (root / "run0").exists():
        timings["train_before_s"] = vadpipe(
            "train", "--features", str(args.demo / "features" / "train"), "--run", str(root / "run0"), *train
        )
    features = root / "features"
    shutil.copytree(args.demo / "features" / "train", features)
    truth = make_pool(root, seed, SplitSize(*args.pool))
    timings["detect_s"] = vadpipe(
        "detect",
        str(root / "new"),
        "--run",
        str(root / "run0"),
        "--features",
        str(features),
        "--json",
        str(root / "intervals.json"),
        "--report",
        str(root / "review"),
        "-q",
    )
    t0 = time.perf_counter()
    counts = review(root / "review", truth, root)
    timings["review_s"] = time.perf_counter() - t0
    verdicts = read_labels_csv(root / "labels.csv")
    confirmed = parse_annotations(root / "annotations.txt")
    labels = {**base_labels(args.demo / "features" / "train"), **verdicts}
    write_labels(root / "labels2.csv", labels)
    timings["train_after_s"] = vadpipe(
        "train", "--features", str(features), "--labels", str(root / "labels2.csv"), "--run", str(root / "run1"), *train
    )
    before = scores(evaluate_run(root / "run0", test_features, test_annotations))
    after = scores(evaluate_run(root / "run1", test_features, test_annotations))
    flagged = {v["stem"] for v in page_data(root / "review" / "index.html")["videos"] if v["n_intervals"]}
    pool = {
        "videos": len(truth),
        "anomalous": sum(bool(t) for t in truth.values()),
        "flagged_normal": sum(1 for s in flagged if not truth[s]),
        "flagged_anomalous": sum(1 for s in flagged if truth[s]),
        "labelled": len(verdicts),
        "labelled_wrong": sum(1 for s, y in verdicts.items() if y != int(bool(truth[s]))),
        "confirmed_intervals": sum(len(v) for v in confirmed.values()),
        **counts,
    }
    return {"seed": seed, "pool": pool, "before": before, "after": after, "timings_s": timings}


def _config(run: Path) -> dict:
    try:
        return json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def spread(values: list[float]) -> dict:
    a = np.array(values, dtype=float)
    return {
        "mean": round(float(a.mean()), 4),
        "sd": round(float(a.std(ddof=1)), 4) if len(a) > 1 else None,
        "min": round(float(a.min()), 4),
        "max": round(float(a.max()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("vadpipe-work/demo"), help="a vadpipe demo folder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--pool",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(5, 5),
        help="normal,anomalous new videos per seed",
    )
    ap.add_argument(
        "--test",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(6, 6),
        help="normal,anomalous videos of the fresh test set",
    )
    ap.add_argument("--test-seed", type=int, default=7000)
    ap.add_argument("--min-steps", type=int, default=None, help="both trainings [default: the recipe's 1500]")
    ap.add_argument("--work", type=Path, default=Path("bench-review"))
    args = ap.parse_args()
    if not (args.demo / "features" / "train").is_dir():
        raise SystemExit(f"{args.demo}: not a vadpipe demo folder (no features/train); run `vadpipe demo` first")
    args.work.mkdir(parents=True, exist_ok=True)

    test_videos, test_features = args.work / "test_videos", args.work / "test_features"
    t0 = time.perf_counter()
    if not (test_videos / "manifest.json").is_file() or not test_features.is_dir():
        ds = make_dataset(
            test_videos, splits={"fresh": SplitSize(*args.test)}, config=SynthConfig(), seed=args.test_seed, workers=1
        )
        vadpipe("extract", str(ds.split_dir("fresh")), "--features", str(test_features), "-q")
    test_s = time.perf_counter() - t0
    annotations = test_videos / "annotations.txt"

    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        done = args.work / f"seed{seed}" / "result.json"  # a finished seed is kept: the bench resumes
        if done.is_file():
            runs.append(json.loads(done.read_text()))
            continue
        runs.append(one_seed(args, seed, test_features, annotations))
        done.write_text(json.dumps(runs[-1]))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    keys = ("frame_ap", "normal_flagged", "anomalous_found")
    summary = {
        k: {
            "before": spread([r["before"][k] for r in runs]),
            "after": spread([r["after"][k] for r in runs]),
            "after_minus_before": spread([r["after"][k] - r["before"][k] for r in runs]),
        }
        for k in keys
    }
    print(
        json.dumps(
            {
                "bench": "review_loop",
                "test_set": {
                    "normal": args.test[0],
                    "anomalous": args.test[1],
                    "seed": args.test_seed,
                    "prepare_s": round(test_s, 1),
                },
                "pool_per_seed": {"normal": args.pool[0], "anomalous": args.pool[1]},
                "min_steps": args.min_steps,
                "summary": summary,
                "runs": runs,
                "load": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
