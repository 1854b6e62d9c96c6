"""Does the demo model know when footage is unlike its training footage?

Usage: python bench/ood.py [--demo DIR] [--real ../shared/media/bikes.mp4 ...] [--seeds 5] [--compare]

For the demo model (``DIR/runs/demo``, from ``vadpipe demo``; without ``--demo`` the demo is
run first into a temporary folder) it prints the share of clips beyond the stored clip
threshold, and the share of videos marked outside the training footage, on

- the demo's test videos (the same synthetic plaza, never seen in training), and
- real footage (default ``../shared/media/bikes.mp4``, a street), extracted into
  ``DIR/features/real`` with the run's settings.

The distance does not depend on the network's weights, only on which videos are fitted and
which set the threshold, so ``--seeds N`` also refits it on N other held-out splits of the demo's
training videos (same fraction, `stratified_holdout` with the N seeds after the run's) and reports
the spread.
``--compare`` measures the alternatives this choice was made against (OAS shrinkage, k-NN on
the raw and on PCA-whitened features) with the same held-out thresholds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _features(folder: Path, split: str) -> dict[str, list[np.ndarray]]:
    from vadpipe.model.data import load_item, scan_features

    data = scan_features(folder, split=split)
    out: dict[str, list[np.ndarray]] = {}
    for item in data.items:
        out.setdefault(item.video, []).append(load_item(item, feature_dim=data.feature_dim))
    return out


def _extract_real(run_dir: Path, paths: list[Path], cache: Path) -> dict[str, list[np.ndarray]]:
    from vadpipe.extract.engines import extract_videos
    from vadpipe.extract.settings import ExtractionSettings
    from vadpipe.model.run import read_run_config

    settings = ExtractionSettings.from_dict(read_run_config(run_dir).extraction["settings"])
    extract_videos(paths, out_dir=cache, settings=settings, progress=True)
    return _features(cache, "test")


def _alternatives(train_rows: np.ndarray):
    """name -> distance function fitted on ``train_rows`` (N, F)."""
    from sklearn.covariance import OAS
    from sklearn.decomposition import PCA

    from vadpipe.model.ood import fit_whitening

    def mahalanobis(mean, white):
        return lambda x: np.linalg.norm((x - mean) @ white, axis=1)

    def knn(bank, k):
        def dist(x):
            d2 = (x**2).sum(1)[:, None] + (bank**2).sum(1)[None] - 2 * x @ bank.T
            return np.sqrt(np.sort(np.maximum(d2, 0), axis=1)[:, k - 1])

        return dist

    mean, white, _ = fit_whitening(train_rows)
    oas = OAS().fit(train_rows)
    values, vectors = np.linalg.eigh(oas.covariance_)
    pca = PCA(n_components=min(64, len(train_rows) // 4), whiten=True, random_state=0).fit(train_rows)
    bank_knn = knn(pca.transform(train_rows), 5)
    return {
        "mahalanobis LW (stored)": mahalanobis(mean, white),
        "mahalanobis OAS": mahalanobis(oas.location_, vectors / np.sqrt(np.maximum(values, 1e-12))),
        "1-NN raw": knn(train_rows, 1),
        "5-NN raw": knn(train_rows, 5),
        f"5-NN PCA-{pca.n_components_} whitened": (lambda x: bank_knn(pca.transform(x))),
    }


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=None, help="a vadpipe demo folder [default: run the demo]")
    ap.add_argument("--real", type=Path, nargs="+", default=[REPO.parent / "shared" / "media" / "bikes.mp4"])
    ap.add_argument("--seeds", type=int, default=5, help="other held-out splits to refit on")
    ap.add_argument("--compare", action="store_true", help="also measure the alternative distances")
    args = ap.parse_args()

    from vadpipe.model.labels import open_training_set
    from vadpipe.model.ood import CLIP_QUANTILE, fit_distance, load_distance
    from vadpipe.model.run import read_run_config
    from vadpipe.model.splits import stratified_holdout
    from vadpipe.postprocess.ood import judge_video

    demo = args.demo
    if demo is None:
        from vadpipe.demo import run_demo

        demo = Path(tempfile.mkdtemp(prefix="vadpipe-bench-ood-")) / "demo"
        run_demo(demo, device="cpu", say=print)
    run_dir = demo / "runs" / "demo"
    stored = load_distance(run_dir)
    if stored is None:
        raise SystemExit(f"{run_dir} has no ood.safetensors: run the demo with this vadpipe version")
    test = _features(demo / "features" / "test", "test")
    real = _extract_real(run_dir, args.real, demo / "features" / "real")
    train_all = _features(demo / "features" / "train", "train")
    config = read_run_config(run_dir)
    heldout = set(config["calibration"]["heldout_videos"])

    def shares(distance, videos):
        judged = [judge_video(distance, crops) for crops in videos.values()]
        clips = np.concatenate([j.clips_outside for j in judged])
        return float(clips.mean()), sum(j.outside for j in judged), len(judged)

    rows = []
    for name, distance in [("stored (run's held-out split)", stored)]:
        rows.append((name, distance, *shares(distance, test), *shares(distance, real)))
    labels = {item.video: int(item.label) for item in open_training_set(demo / "features" / "train").items}
    seeds = [config["calibration"]["seed"] + k for k in range(1, args.seeds + 1)]  # not the run's own split
    for seed in seeds:
        fit, held = stratified_holdout(labels, fraction=config["calibration"]["holdout_fraction"], seed=seed)
        distance = fit_distance({v: train_all[v] for v in fit}, {v: train_all[v] for v in held})
        rows.append((f"refit, held-out split seed {seed}", distance, *shares(distance, test), *shares(distance, real)))

    print(
        f"\ndemo model {run_dir}: {stored.fit_videos} videos ({stored.fit_clips} clips) fitted, threshold "
        f"{stored.threshold:.2f} = {stored.quantile:.0%} quantile of {stored.threshold_clips} clips of "
        f"{stored.threshold_videos} held-out videos; a video is outside when > {stored.max_share:.0%} of its "
        f"clips are beyond"
    )
    print(
        f"{'fit':34s} {'threshold':>9s} | {'test clips flagged':>18s} {'test videos':>11s} | "
        f"{'real clips flagged':>18s} {'real videos':>11s}"
    )
    for name, d, tc, tv, tn, rc, rv, rn in rows:
        print(f"{name:34s} {d.threshold:9.2f} | {tc:18.1%} {f'{tv}/{tn}':>11s} | {rc:18.1%} {f'{rv}/{rn}':>11s}")
    for what, videos in (("test", test), ("real", real)):
        d = np.concatenate([stored.clip_distances(c) for c in videos.values()])
        print(f"stored fit, {what} clip distances: median {np.median(d):.2f}, min {d.min():.2f}, max {d.max():.2f}")
    refits = np.array([(r[2], r[5]) for r in rows[1:]])
    if len(refits):
        print(
            f"refits: test clips flagged {refits[:, 0].mean():.1%} (min {refits[:, 0].min():.1%}, max "
            f"{refits[:, 0].max():.1%}); real clips flagged {refits[:, 1].mean():.1%} (min "
            f"{refits[:, 1].min():.1%}, max {refits[:, 1].max():.1%})"
        )

    if args.compare:
        print(
            f"\ndistances compared, threshold = {CLIP_QUANTILE:.0%} quantile of held-out clips, "
            f"{1 + args.seeds} held-out splits (mean, min-max)"
        )
        print(
            f"{'distance':30s} | {'test clips flagged':>22s} | {'real clips flagged':>22s} | {'AUROC test vs real':>20s}"
        )
        splits = [(sorted(set(train_all) - heldout), sorted(heldout))]
        splits += [
            stratified_holdout(labels, fraction=config["calibration"]["holdout_fraction"], seed=s) for s in seeds
        ]
        results: dict[str, list[tuple[float, float, float]]] = {}
        stack = lambda videos: np.concatenate([np.mean(c, axis=0) for c in videos.values()])  # noqa: E731
        test_rows, real_rows = stack(test), stack(real)
        for fit, held in splits:
            fit_rows = np.concatenate([r for v in fit for r in train_all[v]]).astype(np.float64)
            held_rows = stack({v: train_all[v] for v in held})
            for name, dist in _alternatives(fit_rows).items():
                threshold = np.quantile(dist(held_rows), CLIP_QUANTILE)
                dt, dr = dist(test_rows), dist(real_rows)
                results.setdefault(name, []).append(((dt > threshold).mean(), (dr > threshold).mean(), _auroc(dt, dr)))
        for name, values in results.items():
            v = np.array(values)
            cells = [f"{v[:, i].mean():6.1%} ({v[:, i].min():.0%}-{v[:, i].max():.0%})" for i in range(2)]
            print(
                f"{name:30s} | {cells[0]:>22s} | {cells[1]:>22s} | "
                f"{v[:, 2].mean():.3f} ({v[:, 2].min():.3f}-{v[:, 2].max():.3f})"
            )


if __name__ == "__main__":
    main()
