"""Training opens its feature set once: the members of an ensemble, its calibration and its
outside-footage check all use the set the driver opened, and none scans (reads and, for a
cache, hashes) the feature files again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_train import _planted

import vadpipe.model.data

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders `vadpipe.model.data.scan_features` scans: every scan, of a cache or of bare
    features, starts by listing the folder's cache records, then reads (and hashes) its files."""
    seen: list[Path] = []
    original = vadpipe.model.data.iter_records

    def counted(root):
        seen.append(Path(root))
        return original(root)

    monkeypatch.setattr(vadpipe.model.data, "iter_records", counted)
    return seen


def test_an_ensemble_training_opens_its_features_once(tmp_path: Path, scans: list[Path]) -> None:
    from vadpipe.calibrated_training import train_calibrated
    from vadpipe.recipes import recipe

    _planted(tmp_path / "train", 16, seed=0)
    chosen = recipe("default")
    config = replace(chosen.training, min_steps=20, warmup_steps=5, select_every_steps=10, seed=3)
    train_calibrated(
        tmp_path / "train", out_dir=tmp_path / "run", config=config, calibration=chosen.calibration, ensemble=2, jobs=1
    )
    assert scans == [tmp_path / "train"]


def test_resuming_an_ensemble_opens_its_features_once(tmp_path: Path, scans: list[Path]) -> None:
    from vadpipe.calibrated_training import resume_calibrated, train_calibrated
    from vadpipe.recipes import recipe

    _planted(tmp_path / "train", 16, seed=0)
    chosen = recipe("default")
    config = replace(chosen.training, min_steps=20, warmup_steps=5, select_every_steps=10, seed=3)
    run = train_calibrated(
        tmp_path / "train", out_dir=tmp_path / "run", config=config, calibration=chosen.calibration, ensemble=2, jobs=1
    )
    # as if killed while member 1 trained: the ensemble not put together, member 1 without weights
    (run / "weights.safetensors").unlink()
    (run / "members" / "member-1" / "weights.safetensors").unlink()
    scans.clear()
    resume_calibrated(run)
    assert scans == [(tmp_path / "train").resolve()]  # the recorded path, opened by the driver alone


def test_resuming_a_single_calibrated_run_opens_its_features_once(tmp_path: Path, scans: list[Path]) -> None:
    from vadpipe.calibrated_training import resume_calibrated, train_calibrated
    from vadpipe.recipes import recipe

    _planted(tmp_path / "train", 16, seed=0)
    chosen = recipe("default")
    config = replace(chosen.training, min_steps=20, warmup_steps=5, select_every_steps=10, seed=3)
    run = train_calibrated(tmp_path / "train", out_dir=tmp_path / "run", config=config, calibration=chosen.calibration)
    scans.clear()
    resume_calibrated(run)  # resume, calibration and the outside-footage check share the one set
    assert scans == [(tmp_path / "train").resolve()]
