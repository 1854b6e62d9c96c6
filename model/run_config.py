"""The typed contents of a run folder's ``config.json``: what training hands to every later stage.

`RunConfig.from_dict` is the one place that checks the file (with `vadpipe.extract.contract`,
as every JSON file vadpipe reads is checked); detect, evaluate, calibration and resume read the
typed fields instead of digging in the JSON, so the block length and the operating point are
parsed once per load, with one message per bad value. The extraction settings and the score
calibrations are kept as written and parsed once where they are used
(`vadpipe.detect.run_extraction_settings`, `vadpipe.postprocess.intervals.OperatingPoint`).
The file format is unchanged (schema_version 1): runs written before this module load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vadpipe.errors import CheckpointError
from vadpipe.extract.contract import optional_unit, section, unit

from .config import TrainConfig
from .net import ModelConfig

__all__ = ["RUN_SCHEMA_VERSION", "OPERATING_POINT_METHODS", "SavedOperatingPoint", "RunConfig"]

RUN_SCHEMA_VERSION = 1
# Where a run's operating point came from: the paper's fixed 0.35, a user's choice, or calibrated
# on held-out training videos for a false-alarm target or the best interval F1.
OPERATING_POINT_METHODS = ("fixed", "manual", "false_alarms", "f1")


@dataclass(frozen=True)
class SavedOperatingPoint:
    """The operating point a run stores (written by `vadpipe.calibrated_training`), checked.

    Also the thresholds and calibrations of every operating point detection uses
    (`vadpipe.postprocess.intervals.OperatingPoint` holds one), so they are defined once.

    Attributes:
        method: one of `OPERATING_POINT_METHODS`.
        threshold: curve threshold in [0, 1].
        video_threshold: video gate in [0, 1] (0: none).
        target_false_alarm_rate: the target it was chosen for, if any.
        video_calibration, interval_calibration: the score calibrations as stored (their format
            belongs to `vadpipe.postprocess.calibration.ScoreCalibrator`), or None.
        entry: the whole stored entry (held-out summary, notes, ...), for reports.
    """

    method: str = "fixed"
    threshold: float = 0.35
    video_threshold: float = 0.0
    target_false_alarm_rate: float | None = None
    video_calibration: Mapping[str, Any] | None = None
    interval_calibration: Mapping[str, Any] | None = None
    entry: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> SavedOperatingPoint:
        """Check and read a stored entry; ``where`` names the file in errors."""
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{where}: operating_point must be an object, got {data!r:.60}")
        method = data.get("method", "fixed")
        if method not in OPERATING_POINT_METHODS:
            raise CheckpointError(
                f"{where}: operating_point.method must be one of {', '.join(OPERATING_POINT_METHODS)}, got {method!r}"
            )
        op = f"{where}: operating_point"
        calibrations = [
            section(data, key, where, error=CheckpointError, prefix="operating_point.")
            for key in ("video_calibration", "interval_calibration")
        ]
        threshold = float(unit(data, "threshold", op, error=CheckpointError, default=0.35))
        video_threshold = float(unit(data, "video_threshold", op, error=CheckpointError, default=0.0))
        target = optional_unit(data, "target_false_alarm_rate", op, error=CheckpointError)
        return cls(
            method=method,
            threshold=threshold,
            video_threshold=video_threshold,
            target_false_alarm_rate=None if target is None else float(target),
            video_calibration=calibrations[0],
            interval_calibration=calibrations[1],
            entry=dict(data),
        )


@dataclass(frozen=True)
class RunConfig:
    """A run's ``config.json``, checked.

    Attributes:
        model: the network settings.
        training: the training settings (`vadpipe.model.config.TrainConfig`), None for a
            hand-built run saved without them.
        operating_point: the stored operating point, None when the run has none (the
            paper's fixed threshold applies).
        extraction: the feature extraction the run was trained on (``settings`` and
            ``settings_key``, as `vadpipe.extract.settings` writes them), None for bare features.
        data, validation, selection, calibration: the other sections as written (None if absent).
        sections: the whole file as read, so that a writer can update one section and keep the rest.
    """

    model: ModelConfig
    training: TrainConfig | None = None
    operating_point: SavedOperatingPoint | None = None
    extraction: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None
    validation: Mapping[str, Any] | None = None
    selection: Mapping[str, Any] | None = None
    calibration: Mapping[str, Any] | None = None
    sections: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def block_len(self) -> int:
        """The training block length L scoring must use (3, the paper's, for a run saved without training)."""
        return 3 if self.training is None else self.training.block_len

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> RunConfig:
        """Check every section a later stage reads; ``where`` names the file in errors.

        Raises:
            CheckpointError: a foreign schema or an unusable section, naming it and the value.
        """
        if not isinstance(data, Mapping) or data.get("schema_version") != RUN_SCHEMA_VERSION or "model" not in data:
            raise CheckpointError(f"{where} is not a vadpipe run config (schema_version {RUN_SCHEMA_VERSION})")
        try:
            model = ModelConfig.from_dict(data["model"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: bad model settings: {exc}") from exc
        training = section(data, "training", where, error=CheckpointError)
        if training is not None:
            try:
                training = TrainConfig.from_dict(training, model=data["model"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: unusable training settings: {exc}") from exc
        op = data.get("operating_point")
        return cls(
            model=model,
            training=training,
            operating_point=None if op is None else SavedOperatingPoint.from_dict(op, where=where),
            **{
                key: section(data, key, where, error=CheckpointError)
                for key in ("extraction", "data", "validation", "selection", "calibration")
            },
            sections=dict(data),
        )
