"""Training an ensemble run: K members, cross-fitted on K folds of the training videos.

Why cross-fitting (bench/quality.py, long set, 5 seeds): a single default run's frame AP spans
0.51-0.84, and the weak runs are weak mostly because of *which* quarter of the videos they
were not trained on (the same split gave 0.50 and 0.65 from two inits, another split 0.79 and
0.83), and partly because of the init. Members that share one split cannot average the split
away. With K folds, member k holds out fold k (early stopping on it) and trains on the rest:
every video is trained on by K - 1 members, the ensemble sees all of them, and every training
video is held out by exactly one member, so the operating point is chosen on *all* of them
(each scored by the member that never saw it) instead of on a quarter.

A member that ranks its own held-out fold no better than chance (held-out peak AUC <= 0.5, the
early-stopping statistic) failed to learn, and is left out of the ensemble with a warning;
its fold then has no out-of-fold scorer and does not take part in choosing the operating point.

The threshold is chosen on single members' out-of-fold curves and applied to the members'
mean curve. The mean is smoother: on normal videos its peaks are lower than a single member's,
so false alarms come out at or below the held-out estimate, the conservative side.

Without held-out videos (``calibration`` None) the K members all train on every video with
different seeds and the run keeps the paper's fixed threshold.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
from filelock import FileLock

from vadpipe.errors import CheckpointError, ConfigError
from vadpipe.model.config import TrainConfig
from vadpipe.model.data import DataWarning, FeatureSet
from vadpipe.model.ensemble import Ensemble
from vadpipe.model.labels import open_training_set
from vadpipe.model.ood import fit_run_distance
from vadpipe.model.provenance import SECTION
from vadpipe.model.run import (
    CHECKPOINT_DIR,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    load_run,
    read_json,
    read_run_config,
    save_run,
    write_json,
)
from vadpipe.model.selection import heldout_scores
from vadpipe.model.splits import stratified_folds
from vadpipe.model.train import resume, train
from vadpipe.model.validation import ValidationSpec
from vadpipe.run_calibration import CalibrationSpec, calibrate_run, fixed_operating_point, store_operating_point

__all__ = ["MAX_MEMBERS", "REQUEST_FILE", "member_seeds", "train_ensemble", "resume_ensemble"]

MAX_MEMBERS = 99  # member k's seed is 100·seed + k: distinct across seeds below this
REQUEST_FILE = "ensemble_request.json"  # what was asked, written before any member trains: --resume reads it


def member_seeds(seed: int, size: int) -> list[int]:
    """The members' seeds, ``100·seed + k``."""
    if not 1 <= size <= MAX_MEMBERS:
        raise ConfigError(f"an ensemble has 1 to {MAX_MEMBERS} members, got {size}")
    return [100 * seed + k for k in range(size)]


def _member_job(job: tuple) -> str:
    """Train (or finish) one member in its own folder; a finished member is kept as it is.

    A lock per member: a driver killed with SIGKILL leaves its pool's workers training until
    their member ends, and a resumed run must wait for them, not train the same folder twice."""
    member_dir = Path(job[0])
    member_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(member_dir.parent / f".{member_dir.name}.lock")):
        return _train_member(job)


def _train_member(job: tuple) -> str:
    member_dir, features, data, config, labels_csv, crops, validation, videos, heldout, extra, threads = job
    if threads:
        torch.set_num_threads(threads)
    member_dir = Path(member_dir)
    if (member_dir / WEIGHTS_FILE).is_file():
        return str(member_dir)
    if (member_dir / "config.json").is_file():
        return str(resume(member_dir, data=data))
    if member_dir.exists():  # killed before its config was written
        shutil.rmtree(member_dir)
    return str(
        train(
            features,
            out_dir=member_dir,
            config=config,
            labels_csv=labels_csv,
            crops=crops,
            validation=validation,
            videos=videos,
            heldout=heldout,
            extra_config=extra,
            data=data,
        )
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _fold_count(labels: dict[str, int], size: int) -> int:
    """``size``, or fewer when a class has fewer videos (each fold needs one of each), with a warning."""
    smallest = min(sum(1 for y in labels.values() if y == c) for c in (0, 1))
    if smallest >= size:
        return size
    if smallest < 2:
        raise ConfigError(
            f"cross-fitted members need at least 2 videos of each class, got {smallest}; "
            "add videos or train without held-out videos (--set holdout_fraction=0)"
        )
    warnings.warn(
        f"a class has only {smallest} training videos: training {smallest} cross-fitted members instead of {size}",
        DataWarning,
        stacklevel=3,
    )
    return smallest


def _screen(
    nets: list[torch.nn.Module], folds: list[list[str]] | None, data: FeatureSet, config: TrainConfig
) -> list[float | None]:
    """Each member's peak AUC on its own held-out fold (None without folds or with one class)."""
    if folds is None:
        return [None] * len(nets)
    aucs = []
    for net, fold in zip(nets, folds):
        wanted = set(fold)
        held = replace(data, items=tuple(item for item in data.items if item.video in wanted))
        line = heldout_scores(net, held, block_len=config.block_len, top_fraction=config.loss.mil_top_fraction)
        aucs.append(line["heldout_peak_auc"])
    return aucs


def train_ensemble(
    features: Path | str,
    *,
    out_dir: Path,
    config: TrainConfig,
    calibration: CalibrationSpec | None,
    labels_csv: Path | str | None,
    crops: Sequence[int] | None,
    validation: ValidationSpec | None,
    data: FeatureSet,
    backbone: dict,
    size: int,
    jobs: int | None,
    show_progress: bool,
) -> Path:
    """Members under ``out_dir/members/member-<k>/`` (each a run folder), then the ensemble run in
    ``out_dir``; rerunning it on the same folder keeps the finished members and finishes the rest.
    Once the run is saved the members' checkpoints are removed (their weights, metrics and configs stay).
    ``data`` is ``features`` opened once (with ``labels_csv`` and ``crops``): every member trains,
    resumes and is screened on it, and none scans or hashes the files again.

    Returns:
        ``out_dir``.
    """
    if (out_dir / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{out_dir} already holds a run; choose another --out")
    labels = {item.video: int(item.label) for item in data.items}
    if calibration is None:
        folds = None
    else:
        size = _fold_count(labels, size)
        folds = stratified_folds(labels, folds=size, seed=config.seed)
    seeds = member_seeds(config.seed, size)
    members = [out_dir / "members" / f"member-{k}" for k in range(size)]
    out_dir.mkdir(parents=True, exist_ok=True)
    asked = {
        "features": str(Path(features).absolute()),
        "labels_csv": None if labels_csv is None else str(labels_csv),
        "crops": None if crops is None else list(crops),
        "size": size,
        "training": config.to_dict(),
        "model": config.model.to_dict(),
        "calibration": None if calibration is None else calibration.to_dict(),
        "validation": None
        if validation is None
        else {
            "features": str(validation.features),
            "annotations": str(validation.annotations),
            "every_epochs": validation.every_epochs,
        },
        "features_backbone": backbone,
    }
    if (out_dir / REQUEST_FILE).is_file() and read_json(out_dir / REQUEST_FILE, what="ensemble request") != asked:
        raise CheckpointError(
            f"{out_dir} holds an unfinished ensemble run with other settings: finish it with "
            f"vadpipe train --resume {out_dir}, or choose another --out"
        )
    write_json(out_dir / REQUEST_FILE, asked)
    n_jobs = max(1, min(size, jobs if jobs is not None else _cores()))
    threads = max(1, _cores() // n_jobs) if n_jobs > 1 else 0
    payload = []
    for k, (member, seed) in enumerate(zip(members, seeds)):
        if folds is None:
            videos = heldout = None
            request = {SECTION: backbone}
        else:
            heldout = folds[k]
            videos = sorted(set(labels) - set(heldout))
            request = {
                SECTION: backbone,
                "calibration": {**calibration.to_dict(), "seed": config.seed, "heldout_videos": heldout},
            }
        payload.append(
            (
                member,
                features,
                data,
                replace(config, seed=seed),
                labels_csv,
                crops,
                validation,
                videos,
                heldout,
                request,
                threads,
            )
        )
    if show_progress:
        how = f"cross-fitted on {size} folds" if folds else "on every video"
        print(f"training {size} ensemble members {how}, {n_jobs} at a time", flush=True)
    if n_jobs == 1:
        for job in payload:
            _member_job(job)
    else:
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_member_job, payload))

    nets = [load_run(member).model for member in members]
    aucs = _screen(nets, folds, data, config)
    kept = [k for k, auc in enumerate(aucs) if auc is None or auc > 0.5]
    if not kept:
        warnings.warn(
            f"every member ranks its held-out videos no better than chance (peak AUC "
            f"{', '.join(f'{a:.2f}' for a in aucs)}); keeping all {size}: this data may not "
            "teach the model the anomaly",
            DataWarning,
            stacklevel=2,
        )
        kept = list(range(size))
    for k in sorted(set(range(size)) - set(kept)):
        warnings.warn(
            f"ensemble member {k} (seed {seeds[k]}) ranks its own held-out videos no better than "
            f"chance (peak AUC {aucs[k]:.2f}); it is left out of the run",
            DataWarning,
            stacklevel=2,
        )

    sections = dict(read_run_config(members[kept[0]]).sections)
    sections.pop("operating_point", None)
    sections["data"] = {**sections["data"], **data.summary(), "videos": sorted(labels)}  # what the ensemble saw
    if folds is not None and sections.get("selection"):
        sections["selection"] = {
            **sections["selection"],
            "videos": None,
            "per_member": "each member early-stopped on its own held-out fold (calibration.folds)",
        }
    sections["ensemble"] = {
        "size": len(kept),
        "seeds": [seeds[k] for k in kept],
        "members": [str(members[k].relative_to(out_dir)) for k in kept],
        "cross_fitted": folds is not None,
        "trained": size,
        "left_out": [
            {"member": str(members[k].relative_to(out_dir)), "seed": seeds[k], "heldout_peak_auc": aucs[k]}
            for k in range(size)
            if k not in kept
        ],
        "rule": "the curve is the mean of the members' weighted T-CAMs (score_video)",
    }
    if folds is None:
        sections.pop("calibration", None)
    else:
        sections["calibration"] = {
            **calibration.to_dict(),
            "seed": config.seed,
            "holdout_fraction": 1 / size,
            "folds": [{"member": i, "videos": folds[k]} for i, k in enumerate(kept)],
        }
    with torch.no_grad():
        save_run(out_dir, Ensemble([nets[k] for k in kept]), config=sections)
    summaries = [read_json(m / SUMMARY_FILE, what="member summary") for m in members]
    write_json(
        out_dir / SUMMARY_FILE,
        {
            **summaries[kept[0]],
            "members": [
                {
                    "seed": seed,
                    "selected_epoch": summary.get("selected_epoch"),
                    "last_epoch": summary.get("last_epoch"),
                    "heldout_peak_auc": auc,
                    "kept": k in kept,
                }
                for k, (seed, summary, auc) in enumerate(zip(seeds, summaries, aucs))
            ],
        },
    )
    if folds is None:
        store_operating_point(out_dir, fixed_operating_point())
    else:
        calibrate_run(out_dir, data=data)
    fit_run_distance(out_dir, data=data)
    for member in members:  # a finished ensemble is not resumed: its members' optimizer states only take disk
        shutil.rmtree(member / CHECKPOINT_DIR, ignore_errors=True)
    return out_dir


def resume_ensemble(run_dir: Path | str, *, show_progress: bool = False) -> Path:
    """Finish an ensemble run that was stopped: the finished members are kept, the others resume
    from their checkpoints or start, then the run is put together and calibrated as at first."""
    run_dir = Path(run_dir)
    where = run_dir / REQUEST_FILE
    if (run_dir / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{run_dir} is a finished ensemble run; there is nothing to resume")
    request = read_json(where, what="ensemble request")
    try:
        config = TrainConfig.from_dict(request["training"], model=request["model"])
        calibration = None if request["calibration"] is None else CalibrationSpec.from_dict(request["calibration"])
        validation = (
            None
            if request["validation"] is None
            else ValidationSpec(
                Path(request["validation"]["features"]),
                Path(request["validation"]["annotations"]),
                request["validation"]["every_epochs"],
            )
        )
        features, labels_csv, crops = request["features"], request["labels_csv"], request["crops"]
        size = request["size"]
        backbone = request["features_backbone"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: unusable ensemble request: {exc}") from None
    data = open_training_set(features, labels_csv=labels_csv, crops=crops)
    return train_ensemble(
        features,
        out_dir=run_dir,
        config=config,
        calibration=calibration,
        labels_csv=labels_csv,
        crops=crops,
        validation=validation,
        data=data,
        backbone=backbone,
        size=size,
        jobs=None,
        show_progress=show_progress,
    )
