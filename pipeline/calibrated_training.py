"""Training with a calibrated operating point: hold out part of the training videos, train on
the rest, then choose the detection thresholds and calibrate the scores on the held-out ones.

The run's weights are the model trained **without** the held-out videos, and the thresholds
and calibrations in its ``config.json`` were measured on exactly that model. Retraining on all
videos afterwards would give a model whose score scale differs (two CSL-TAL runs on the same
data can put their weighted T-CAM around 0.3 or around 0.8), so the thresholds would no
longer mean what they were chosen to mean. The price is that the model sees
``1 - holdout_fraction`` of the training videos.

The operating point is chosen by `vadpipe.run_calibration.calibrate_run`; an ensemble
(``ensemble`` > 1) is trained by `vadpipe.ensemble_training`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from vadpipe.ensemble_training import REQUEST_FILE, resume_ensemble, train_ensemble
from vadpipe.errors import ConfigError
from vadpipe.model.config import TrainConfig
from vadpipe.model.data import DataWarning
from vadpipe.model.labels import open_training_set, parse_annotations
from vadpipe.model.ood import fit_run_distance
from vadpipe.model.provenance import SECTION, training_backbone
from vadpipe.model.run import read_run_config
from vadpipe.model.splits import stratified_holdout
from vadpipe.model.train import resume, train
from vadpipe.model.validation import ValidationSpec
from vadpipe.run_calibration import CalibrationSpec, calibrate_run, fixed_operating_point, store_operating_point

__all__ = ["train_calibrated", "resume_calibrated"]


def train_calibrated(
    features: Path | str,
    *,
    out_dir: Path | str,
    config: TrainConfig = TrainConfig(),
    calibration: CalibrationSpec | None = CalibrationSpec(),
    labels_csv: Path | str | None = None,
    crops: Sequence[int] | None = None,
    validation: ValidationSpec | None = None,
    show_progress: bool = False,
    features_backbone: str | None = None,
    ensemble: int = 1,
    jobs: int | None = None,
) -> Path:
    """Train a run and store its operating point in its ``config.json``.

    ``ensemble`` > 1 trains that many members cross-fitted on as many folds of the training
    videos (`vadpipe.ensemble_training`: member k holds out fold k), ``jobs`` of them side by side
    (default: one per core, at most the members); the run is their
    `vadpipe.model.ensemble.Ensemble`, whose averaged curve the operating point is then chosen for,
    on every training video scored by the member that held it out. ``calibration.holdout_fraction``
    is then 1/K and not used.

    With ``calibration``, the training videos are split per class (seeded with
    ``config.seed``), the model is trained on the larger part, and `calibrate_run` chooses
    the operating point on the held-out part (written also as ``reliability.png``). Without
    it, every video is trained on and the run keeps the paper's fixed threshold. The run
    records its features' I3D backbone (``vadpipe.model.provenance``): from the cache records, else
    ``features_backbone`` (the user's word), else unknown, with a warning.

    Returns:
        The run folder.
    """
    if calibration is not None and calibration.annotations is not None:
        parse_annotations(calibration.annotations)  # a bad file fails before training, not after
    data = open_training_set(features, labels_csv=labels_csv, crops=crops)
    backbone = training_backbone(data.extraction, stated=features_backbone, features=features)
    if backbone["source"] == "unknown":
        warnings.warn(backbone["note"], DataWarning, stacklevel=2)
    if not isinstance(ensemble, int) or isinstance(ensemble, bool) or ensemble < 1:
        raise ConfigError(f"ensemble must be an integer >= 1 (members), got {ensemble!r}")
    if ensemble > 1:
        return train_ensemble(
            features,
            out_dir=Path(out_dir),
            config=config,
            calibration=calibration,
            labels_csv=labels_csv,
            crops=crops,
            validation=validation,
            data=data,
            backbone=backbone,
            size=ensemble,
            jobs=jobs,
            show_progress=show_progress,
        )
    if calibration is None:
        run_dir = train(
            features,
            out_dir=out_dir,
            config=config,
            labels_csv=labels_csv,
            crops=crops,
            validation=validation,
            show_progress=show_progress,
            extra_config={SECTION: backbone},
            data=data,
        )
        store_operating_point(run_dir, fixed_operating_point())
        fit_run_distance(run_dir, data=data)  # outside-footage check, threshold cross-fitted (no held-out videos)
        return run_dir
    labels = {item.video: int(item.label) for item in data.items}
    train_videos, heldout = stratified_holdout(labels, fraction=calibration.holdout_fraction, seed=config.seed)
    request = {
        SECTION: backbone,
        "calibration": {**calibration.to_dict(), "seed": config.seed, "heldout_videos": heldout},
    }
    run_dir = train(
        features,
        out_dir=out_dir,
        config=config,
        labels_csv=labels_csv,
        crops=crops,
        validation=validation,
        show_progress=show_progress,
        videos=train_videos,
        heldout=heldout,
        extra_config=request,
        data=data,
    )
    calibrate_run(run_dir, data=data)
    fit_run_distance(run_dir, data=data)  # outside-footage check, threshold from the held-out videos
    return run_dir


def resume_calibrated(run_dir: Path | str, *, epochs: int | None = None, show_progress: bool = False) -> Path:
    """Continue a run from its last checkpoint (`vadpipe.model.train.resume`, early stopping with
    `score_video`), then choose its operating point again (a no-op without held-out videos) and refit the
    outside-footage check, all on the feature set opened here once."""
    if (Path(run_dir) / REQUEST_FILE).is_file():
        if epochs is not None:
            raise ConfigError(f"{run_dir} is an ensemble run: it resumes with its own settings; drop --epochs")
        return resume_ensemble(run_dir, show_progress=show_progress)
    recorded = read_run_config(run_dir).data or {}
    data = None  # a config that does not record its features: resume says what it lacks
    if {"path", "labels_csv", "crops_requested"} <= set(recorded):
        data = open_training_set(recorded["path"], labels_csv=recorded["labels_csv"], crops=recorded["crops_requested"])
    run_dir = resume(run_dir, epochs=epochs, show_progress=show_progress, data=data)
    calibrate_run(run_dir, data=data)
    fit_run_distance(run_dir, data=data)
    return run_dir
