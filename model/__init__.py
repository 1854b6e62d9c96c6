"""Training stage: the CSL-TAL network, its augmentation and loss, feature sets, training, run folders.

Typical use::

    from vadpipe.model import TrainConfig, train, load_run
    run_dir = train("vadpipe-work/features", out_dir="vadpipe-work/runs/r1", config=TrainConfig())  # the paper's

The named recipes (training and calibration together) are `vadpipe.recipes`.
    model = load_run(run_dir).model
"""

from .augment import chunk_start_indices, view_indices
from .data import (
    DataWarning,
    FeatureItem,
    FeatureSet,
    assign_labels,
    labels_from_annotations,
    load_item,
    open_training_set,
    parse_annotations,
    read_labels_csv,
    scan_features,
)
from .losses import LossConfig, LossTerms, csl_loss
from .net import CSLTAL, ModelConfig, ModelOutput
from .run import Run, latest_run, load_run, new_run_dir, save_run, set_latest
from .train import TrainConfig, ValidationSpec, resume, train

__all__ = [
    "CSLTAL",
    "ModelConfig",
    "ModelOutput",
    "view_indices",
    "chunk_start_indices",
    "LossConfig",
    "LossTerms",
    "csl_loss",
    "DataWarning",
    "FeatureItem",
    "FeatureSet",
    "scan_features",
    "assign_labels",
    "labels_from_annotations",
    "open_training_set",
    "load_item",
    "read_labels_csv",
    "parse_annotations",
    "TrainConfig",
    "ValidationSpec",
    "train",
    "resume",
    "Run",
    "load_run",
    "latest_run",
    "set_latest",
    "new_run_dir",
    "save_run",
]
