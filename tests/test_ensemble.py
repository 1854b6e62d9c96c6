"""Ensembles of seeds: one run, scored by score_video as the mean of the members' curves."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import _planted

from vadpipe.errors import CheckpointError
from vadpipe.model.ensemble import Ensemble
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import load_run, save_run
from vadpipe.model.scoring import score_video

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIG = ModelConfig(feature_dim=16)


def _members(n: int) -> list[CSLTAL]:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(CSLTAL(CONFIG).eval())
    return nets


def _crops(t: int = 11) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.abs(rng.normal(0, 1, (t, 16))).astype(np.float32) for _ in range(2)]


def test_an_ensemble_curve_is_the_mean_of_its_members_curves_through_score_video() -> None:
    members, crops = _members(3), _crops()
    alone = [score_video(m, crops) for m in members]
    together = score_video(Ensemble(members).eval(), crops)
    np.testing.assert_allclose(together.wtcam, np.mean([s.wtcam for s in alone], axis=0), rtol=1e-6, atol=1e-7)
    assert together.video_score == pytest.approx(np.mean([s.video_score for s in alone]), rel=1e-6)
    np.testing.assert_allclose(together.attention, np.mean([s.attention for s in alone], axis=0), rtol=1e-6)
    # the members' λ·a are averaged, not mean(λ)·mean(a)
    products = [a.crops[c].attention * a.crops[c].tcam for a in alone for c in range(2)]
    np.testing.assert_allclose(together.wtcam, np.mean(products, axis=0), rtol=1e-6, atol=1e-7)
    # each crop's curve is the mean of the members' curves of that crop
    np.testing.assert_allclose(
        together.crops[1].wtcam, np.mean([s.crops[1].wtcam for s in alone], axis=0), rtol=1e-6, atol=1e-7
    )
    # a one-member ensemble is that member, bit for bit
    one = score_video(Ensemble(members[:1]).eval(), crops)
    assert np.array_equal(one.wtcam, alone[0].wtcam) and one.video_score == alone[0].video_score


def test_an_ensemble_run_round_trips_and_single_runs_still_load(tmp_path: Path) -> None:
    members, crops = _members(2), _crops()
    save_run(tmp_path / "ens", Ensemble(members), config={"ensemble": {"size": 2, "seeds": [0, 1]}})
    run = load_run(tmp_path / "ens")
    assert isinstance(run.model, Ensemble) and len(run.model.members) == 2
    np.testing.assert_array_equal(
        score_video(run.model, crops).wtcam, score_video(Ensemble(members).eval(), crops).wtcam
    )
    save_run(tmp_path / "single", members[0])  # a run without an ensemble section: one network, as before
    single = load_run(tmp_path / "single")
    assert isinstance(single.model, CSLTAL)
    np.testing.assert_array_equal(score_video(single.model, crops).wtcam, score_video(members[0], crops).wtcam)
    config = json.loads((tmp_path / "ens" / "config.json").read_text())
    config["ensemble"]["size"] = 3  # weights of 2 members under a config of 3
    (tmp_path / "ens" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_run(tmp_path / "ens")
    config["ensemble"]["size"] = 0
    (tmp_path / "ens" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="ensemble.size must be an integer >= 1, got 0"):
        load_run(tmp_path / "ens")
    with pytest.raises(ValueError, match="share one model config"):
        Ensemble([members[0], CSLTAL(replace(CONFIG, feature_dim=8))])


def _small_recipe(seed: int):
    from vadpipe.recipes import recipe

    chosen = recipe("default")
    return replace(chosen.training, min_steps=40, warmup_steps=5, select_every_steps=20, seed=seed), chosen.calibration


def test_train_calibrated_cross_fits_the_members_and_calibrates_on_every_video(tmp_path: Path) -> None:
    from vadpipe.calibrated_training import train_calibrated
    from vadpipe.ensemble_training import member_seeds
    from vadpipe.model.labels import open_training_set
    from vadpipe.model.splits import stratified_folds
    from vadpipe.run_calibration import heldout_videos

    _planted(tmp_path / "train", 16, seed=0)
    config, calibration = _small_recipe(3)
    run_dir = train_calibrated(
        tmp_path / "train", out_dir=tmp_path / "run", config=config, calibration=calibration, ensemble=2, jobs=1
    )
    run = load_run(run_dir)
    data = open_training_set(tmp_path / "train")
    everyone = sorted(data.videos)
    folds = stratified_folds({i.video: int(i.label) for i in data.items}, folds=2, seed=3)
    assert sorted(folds[0] + folds[1]) == everyone and not set(folds[0]) & set(folds[1])
    section = run.config.sections["ensemble"]
    assert isinstance(run.model, Ensemble) and section["cross_fitted"] and section["size"] == 2
    assert section["seeds"] == member_seeds(3, 2) == [300, 301]
    for k, member in enumerate(section["members"]):  # member k: its own seed, holds out fold k, trains on the rest
        member_run = load_run(run_dir / member)
        assert not (run_dir / member / "checkpoint").exists()  # a finished run's members keep no optimizer state
        assert member_run.config.training.seed == section["seeds"][k]
        assert member_run.config.calibration["heldout_videos"] == folds[k]
        assert member_run.config.data["videos"] == folds[1 - k]
        for name, tensor in member_run.model.state_dict().items():
            assert torch.equal(run.model.members[k].state_dict()[name], tensor)
    # the ensemble saw every video; every video, scored by the member that held it out, chose the operating point
    assert run.config.data["videos"] == everyone
    assert run.config.calibration["folds"] == [{"member": 0, "videos": folds[0]}, {"member": 1, "videos": folds[1]}]
    op = run.config.operating_point
    assert op is not None and op.method == "false_alarms"
    held = op.entry["heldout"]
    assert sorted(held["videos"]) == everyone and held["normal_videos"] == held["anomalous_videos"] == 8
    fold0 = replace(data, items=tuple(i for i in data.items if i.video in folds[0]))
    oof = heldout_videos(run.model.members[0], fold0, None, block_len=run.config.block_len)
    whole = heldout_videos(run.model, fold0, None, block_len=run.config.block_len)
    assert not all(np.array_equal(a.curve, b.curve) for a, b in zip(oof, whole))  # out-of-fold is not the mean
    assert (run_dir / "ood.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == [300, 301] and all(m["kept"] for m in summary["members"])
    assert all(m["heldout_peak_auc"] > 0.5 for m in summary["members"])


def test_a_member_no_better_than_chance_on_its_fold_is_left_out(tmp_path: Path) -> None:
    """A member whose curve ranks its held-out videos backwards (its classifier's output negated,
    so its peak AUC is 1 - a learnt one's) is left out of the finished run, with a warning, and its
    fold takes no part in the operating point; rerunning on the folder keeps the finished members."""
    import shutil

    from safetensors.torch import load_file, save_file

    from vadpipe.calibrated_training import train_calibrated
    from vadpipe.model.data import DataWarning

    _planted(tmp_path / "train", 16, seed=0)
    config, calibration = _small_recipe(3)
    first = train_calibrated(
        tmp_path / "train", out_dir=tmp_path / "first", config=config, calibration=calibration, ensemble=2, jobs=1
    )
    again = tmp_path / "again"
    shutil.copytree(first / "members", again / "members")  # finished members, as a killed run leaves them
    weights = again / "members" / "member-1" / "weights.safetensors"
    tensors = load_file(weights)
    for name in ("classifier.2.weight", "classifier.2.bias"):
        tensors[name] = -tensors[name]
    save_file(tensors, weights)
    with pytest.warns(DataWarning, match=r"member 1 \(seed 301\) ranks its own held-out videos no better than chance"):
        run_dir = train_calibrated(
            tmp_path / "train", out_dir=again, config=config, calibration=calibration, ensemble=2, jobs=1
        )
    run = load_run(run_dir)
    section = run.config.sections["ensemble"]
    assert section["size"] == 1 and section["members"] == ["members/member-0"] and section["trained"] == 2
    assert section["left_out"][0]["member"] == "members/member-1" and section["left_out"][0]["heldout_peak_auc"] <= 0.5
    assert len(run.model.members) == 1
    for name, tensor in load_run(first / "members" / "member-0").model.state_dict().items():
        assert torch.equal(run.model.members[0].state_dict()[name], tensor)  # member 0 kept as it was
    folds = run.config.calibration["folds"]
    assert len(folds) == 1 and folds[0]["member"] == 0
    assert sorted(run.config.operating_point.entry["heldout"]["videos"]) == folds[0]["videos"]


def test_train_warns_when_a_run_finds_no_heldout_anomaly() -> None:
    import click
    from click.testing import CliRunner

    from vadpipe.train_summary import warn_weak

    @click.command()
    @click.argument("found", type=int)
    def show(found: int) -> None:
        warn_weak({"heldout": {"anomalous_videos": 5, "anomalous_videos_flagged": found}})

    assert "finds none of the 5 held-out anomalous videos" in CliRunner().invoke(show, ["0"]).output
    assert CliRunner().invoke(show, ["4"]).output == ""
    warn_weak(None)  # a run without held-out videos (the paper recipe): nothing to say
