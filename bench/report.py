"""Wall time of ``vadpipe report`` on N generated videos against the ``vadpipe detect`` that scored them.

Usage: python bench/report.py [--videos 100] [--frames 32] [--dir bench-report] [--screenshot PNG]

Generates N synthetic test videos (half with an anomaly) and 8 training videos, trains a model
with the default recipe, then times, each in its own process: ``detect`` on the N videos (a
fresh feature cache: what detect costs on new footage), ``report`` of its intervals JSON (links
the sources, a thumbnail per interval), the same report rebuilt (media reused), and a report
with ``--proxy always`` (every video transcoded: the worst case). With ``--screenshot`` it opens
the page of the highest-scored video in Debian's chromium and saves a PNG (the README's).
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

from vadpipe.synth import SplitSize, SynthConfig, make_dataset

VADPIPE = [sys.executable, "-m", "vadpipe"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(VADPIPE + args, check=True)
    return time.perf_counter() - start


def screenshot(report: Path, target: Path) -> None:
    from playwright.sync_api import sync_playwright

    index = json.loads(
        (report / "index.html").read_text().split('type="application/json">', 1)[1].split("</script>", 1)[0]
    )
    best = max(index["videos"], key=lambda v: (v["n_intervals"] > 0, v["video_score"]))
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 900, "height": 760})
        page.goto((report / best["page"]).as_uri())
        page.wait_for_function("document.getElementById('player').readyState >= 2")
        if best["n_intervals"]:  # the frame at the first interval's peak, the interval confirmed
            page.click('#intervals tr[data-index="0"] a.seek-peak')
            page.click('#intervals tr[data-index="0"] button.anomaly')
        page.wait_for_timeout(300)
        page.screenshot(path=str(target), full_page=True)
        browser.close()
    from PIL import Image  # a 256-colour palette: a third of the size, the same picture to the eye

    Image.open(target).convert("RGB").quantize(256).save(target, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--frames", type=int, default=32, help="frames per test video (2 I3D clips at 32)")
    ap.add_argument("--dir", type=Path, default=Path("bench-report"))
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument(
        "--show-threshold",
        type=float,
        default=None,
        help="detect the screenshot's video at this threshold instead of the run's calibrated one",
    )
    args = ap.parse_args()
    root = args.dir.resolve()
    train_data, data = root / "data-train", root / "data-test"
    if not (train_data / "manifest.json").is_file():
        make_dataset(train_data, splits={"train": SplitSize(4, 4)}, config=SynthConfig(n_frames=(112, 160)), seed=0)
    if not (data / "manifest.json").is_file():
        make_dataset(
            data,
            splits={"test": SplitSize(args.videos - args.videos // 2, args.videos // 2)},
            config=SynthConfig(n_frames=args.frames),
            seed=1,
        )
    run = root / "run"
    if not (run / "weights.safetensors").is_file():
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run(
            VADPIPE + ["extract", str(train_data / "train"), "--features", str(root / "features-train"), "-q"],
            check=True,
        )
        # the paper recipe's 40 steps are enough here: the bench times detect and report, not the model
        subprocess.run(
            VADPIPE
            + [
                "train",
                "--features",
                str(root / "features-train"),
                "--run",
                str(run),
                "-q",
                "--recipe",
                "paper",
                "--epochs",
                "40",
                "--set",
                "holdout_fraction=0.25",
                "--seed",
                "0",
            ],
            check=True,
        )
    for name in ("features-test", "report", "report-again", "report-proxies"):
        if name != "report-again":
            shutil.rmtree(root / name, ignore_errors=True)
    intervals = root / "intervals.json"
    annotations = data / "annotations.txt"
    t_detect = timed(
        [
            "detect",
            str(data / "test"),
            "--run",
            str(run),
            "--features",
            str(root / "features-test"),
            "--json",
            str(intervals),
            "-q",
        ]
    )
    t_report = timed(["report", str(intervals), "--out", str(root / "report"), "--annotations", str(annotations), "-q"])
    t_again = timed(["report", str(intervals), "--out", str(root / "report"), "--annotations", str(annotations), "-q"])
    t_proxy = timed(["report", str(intervals), "--out", str(root / "report-proxies"), "--proxy", "always", "-q"])
    doc = json.loads(intervals.read_text())
    n = len(doc["videos"])
    n_int = sum(len(v["intervals"]) for v in doc["videos"])
    clips = sum(len(v["clips"]) for v in doc["videos"])
    print(
        f"{n} videos of {args.frames} frames (320x240, 25 fps), {clips} clips, {n_int} intervals; "
        f"load {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs"
    )
    print(f"detect (fresh cache)          {t_detect:8.1f} s  {t_detect / n:6.2f} s/video")
    for label, t in (
        ("report (links, thumbnails)", t_report),
        ("report rebuilt (media reused)", t_again),
        ("report --proxy always", t_proxy),
    ):
        print(f"{label:30s}{t:8.1f} s  {t / n:6.2f} s/video  {100 * t / t_detect:5.1f} % of detect")
    if args.screenshot is not None:  # one longer anomalous video, so the curve has points to show
        show = root / "data-show"
        if not (show / "manifest.json").is_file():
            make_dataset(show, splits={"show": SplitSize(0, 1)}, config=SynthConfig(n_frames=240), seed=2)
        subprocess.run(
            VADPIPE
            + [
                "detect",
                str(show / "show"),
                "--run",
                str(run),
                "--features",
                str(root / "features-show"),
                "--json",
                str(root / "show.json"),
                "--report",
                str(root / "report-show"),
                "--annotations",
                str(show / "annotations.txt"),
                "-q",
            ]
            + ([] if args.show_threshold is None else ["--threshold", str(args.show_threshold)]),
            check=True,
        )
        screenshot(root / "report-show", args.screenshot.resolve())
        print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
