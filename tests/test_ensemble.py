"""Ensembles of seeds: one run, scored by score_video as the mean of the members' curves."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vadpipe.errors import CheckpointError
from vadpipe.model.ensemble import Ensemble
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import load_run, save_run
from vadpipe.postprocess.scores import score_video

from test_train import _planted

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
    np.testing.assert_allclose(together.crops[1].wtcam, np.mean([s.crops[1].wtcam for s in alone], axis=0),
                               rtol=1e-6, atol=1e-7)
    # a one-member ensemble is that member, bit for bit
    one = score_video(Ensemble(members[:1]).eval(), crops)
    assert np.array_equal(one.wtcam, alone[0].wtcam) and one.video_score == alone[0].video_score


def test_an_ensemble_run_round_trips_and_single_runs_still_load(tmp_path: Path) -> None:
    members, crops = _members(2), _crops()
    save_run(tmp_path / "ens", Ensemble(members), config={"ensemble": {"size": 2, "seeds": [0, 1]}})
    run = load_run(tmp_path / "ens")
    assert isinstance(run.model, Ensemble) and len(run.model.members) == 2
    np.testing.assert_array_equal(score_video(run.model, crops).wtcam,
                                  score_video(Ensemble(members).eval(), crops).wtcam)
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


def test_train_calibrated_trains_the_members_on_one_split_and_calibrates_their_mean(tmp_path: Path) -> None:
    from vadpipe.calibrated_training import member_seeds, train_calibrated
    from vadpipe.recipes import recipe

    _planted(tmp_path / "train", 16, seed=0)
    chosen = recipe("default")
    config = replace(chosen.training, min_steps=40, warmup_steps=5, select_every_steps=20, seed=3)
    run_dir = train_calibrated(tmp_path / "train", out_dir=tmp_path / "run", config=config,
                               calibration=chosen.calibration, ensemble=2, jobs=1)
    run = load_run(run_dir)
    assert isinstance(run.model, Ensemble) and member_seeds(3, 2) == [3, 1003]
    section = run.config.sections["ensemble"]
    assert section["size"] == 2 and section["seeds"] == [3, 1003]
    heldout = run.config.calibration["heldout_videos"]
    for member, seed in zip(section["members"], section["seeds"]):  # each member: same split, its own seed
        member_run = load_run(run_dir / member)
        assert member_run.config.training.seed == seed
        assert member_run.config.calibration["heldout_videos"] == heldout
        for name, tensor in member_run.model.state_dict().items():
            index = section["members"].index(member)
            assert torch.equal(run.model.members[index].state_dict()[name], tensor)
    assert run.config.operating_point is not None and run.config.operating_point.method == "false_alarms"
    assert (run_dir / "ood.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == [3, 1003]


def test_train_warns_when_a_run_finds_no_heldout_anomaly() -> None:
    import click
    from click.testing import CliRunner

    from vadpipe.cmd_train import _warn_weak

    @click.command()
    @click.argument("found", type=int)
    def show(found: int) -> None:
        _warn_weak({"heldout": {"anomalous_videos": 5, "anomalous_videos_flagged": found}})

    assert "finds none of the 5 held-out anomalous videos" in CliRunner().invoke(show, ["0"]).output
    assert CliRunner().invoke(show, ["4"]).output == ""
    _warn_weak(None)  # a run without held-out videos (the paper recipe): nothing to say
