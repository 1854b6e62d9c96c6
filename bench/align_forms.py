"""Alignment forms that are not product options, measured on a development set (issue 18).

Usage: python bench/align_forms.py --form wtcam|sg [--dir bench-quality] [--set long] [--seeds 1 2 3 4 5]

Each run is the default recipe with ``--align`` (two phase views, weight 0.05, view scaling
``once``) and one member (``--ensemble 1``), trained and evaluated as bench/quality.py does, with
the alignment term replaced inside the training loss of this process only:

* ``wtcam``: the term on the weighted T-CAM ψ = λ·g(x) (what detection thresholds) instead of λ;
* ``sg``:    ψ of view 1 pulled toward view 2's detached ψ (an asymmetric target).

It prints each seed's frame AP, AUC, interval F1 and flagged normal videos, then mean [min, max].
Compare with ``python bench/quality.py --variants default-align`` (the attention form).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from quality_sets import build  # noqa: E402


def use_form(form: str) -> None:
    """Replace `csl_loss` in the training module (this process) by one whose alignment term is ``form``."""
    train_module = importlib.import_module("vadpipe.model.train")  # vadpipe.model.train is also a function name
    losses = importlib.import_module("vadpipe.model.losses")

    def loss(attention, video_score, labels, mask, *, config, wtcam=None):
        terms = losses.csl_loss(attention, video_score, labels, mask, config=config, wtcam=wtcam)
        if attention.shape[1] != 2 or wtcam is None:
            return terms
        valid = mask.to(attention.dtype)
        lengths = valid.sum(1)
        first, second = wtcam[:, 0], wtcam[:, 1]
        if form == "sg":
            second = second.detach()
        term = config.w_align * ((first - second).square() * valid).sum(1) / lengths
        if config.normalize == "steps":  # as csl_loss normalises every term
            term = term.sum() / terms.n_steps
        else:
            term = (term / (2 * attention.shape[0] * lengths)).sum()
        return terms._replace(total=terms.total - terms.alignment + term, alignment=term)

    train_module.csl_loss = loss


def run_one(job: tuple) -> dict:
    root, name, form, seed = job
    torch.set_num_threads(1)
    use_form(form)
    from vadpipe.calibrated_training import train_calibrated
    from vadpipe.postprocess.evaluate import evaluate_run
    from vadpipe.recipes import RECIPES

    bench = build(root, name)
    chosen = RECIPES["default"].replaced(training={"align": True, "seed": seed}, ensemble=1)
    out = root / name / "runs" / f"align-{form}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train_calibrated(bench.train, out_dir=out, config=chosen.training, calibration=chosen.calibration)
        report = evaluate_run(run, bench.test, bench.test_annotations, protocol="standard")
    detection = report["detection"]
    return {
        "set": name,
        "form": form,
        "seed": seed,
        "frame_ap": report["frame"]["ap"],
        "frame_auc": report["frame"]["auc"],
        "interval_f1": detection["intervals"]["iou_0.3"]["f1"],
        "normal_flagged": detection["normal_videos_flagged"],
        "normal_videos": detection["normal_videos"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--form", choices=["wtcam", "sg"], required=True)
    parser.add_argument("--dir", type=Path, default=Path("bench-quality"))
    parser.add_argument("--set", default="long", choices=["long", "short", "real"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(run_one, [(args.dir.absolute(), args.set, args.form, s) for s in args.seeds]):
            rows.append(row)
            print(json.dumps(row), flush=True)
    ap = [r["frame_ap"] for r in rows]
    print(
        f"{args.set} alignment on {args.form}: frame AP {np.mean(ap):.3f} [{min(ap):.3f}, {max(ap):.3f}], "
        f"normal flagged {sum(r['normal_flagged'] for r in rows)}/{sum(r['normal_videos'] for r in rows)}"
    )


if __name__ == "__main__":
    main()
