"""vadpipe's default training recipe: balanced batches, step schedules, early stopping, the recipes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import _frame_auc, _planted

from vadpipe.model.config import TrainConfig
from vadpipe.model.labels import open_training_set
from vadpipe.model.run import load_run
from vadpipe.model.samplers import batches_per_epoch, epoch_batches
from vadpipe.model.schedules import lr_at_step, planned_epochs
from vadpipe.model.selection import heldout_scores
from vadpipe.model.train import resume, train
from vadpipe.recipes import RECIPES, recipe

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# --- class-balanced batches --------------------------------------------------------------------


def test_balanced_batches_hold_both_classes_and_cover_the_larger_one_once() -> None:
    labels = [0] * 7 + [1] * 2  # 7 normal, 2 anomalous
    batches = epoch_batches(labels, batch_size=4, balanced=True, rng=np.random.default_rng(0))
    assert len(batches) == batches_per_epoch(labels, batch_size=4, balanced=True) == 4  # ceil(2 * 7 / 4)
    for batch in batches:
        assert sorted(labels[i] for i in batch) == [0, 0, 1, 1]
    normal = Counter(i for b in batches for i in b if labels[i] == 0)
    anomalous = Counter(i for b in batches for i in b if labels[i] == 1)
    assert set(normal) == set(range(7)) and max(normal.values()) - min(normal.values()) <= 1
    assert anomalous == {7: 4, 8: 4}  # 8 anomalous slots cycle through reshuffles of the 2 videos


def test_odd_balanced_batches_alternate_the_extra_slot() -> None:
    labels = [0] * 5 + [1] * 5
    batches = epoch_batches(labels, batch_size=3, balanced=True, rng=np.random.default_rng(1))
    assert [sum(labels[i] for i in b) for b in batches] == [2, 1, 2, 1]  # anomalous per batch
    assert all(len(b) == 3 for b in batches)


def test_unbalanced_batches_are_one_shuffle_and_one_class_falls_back() -> None:
    labels = [0, 1, 0, 0, 1, 0, 1]
    batches = epoch_batches(labels, batch_size=3, balanced=False, rng=np.random.default_rng(2))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert np.array_equal(np.concatenate(batches), np.random.default_rng(2).permutation(7))  # the authors' sampler
    one_class = epoch_batches([0, 0, 0], batch_size=2, balanced=True, rng=np.random.default_rng(3))
    assert sorted(np.concatenate(one_class).tolist()) == [0, 1, 2]


# --- schedules in optimizer steps --------------------------------------------------------------


def test_cosine_schedule_with_warmup_by_hand() -> None:
    config = TrainConfig(lr=1e-3, lr_decay=0.01, schedule="cosine", warmup_steps=10)
    lr = [lr_at_step(s, epoch=1, total_steps=110, config=config) for s in (1, 5, 10, 60, 110)]
    assert lr == pytest.approx([1e-4, 5e-4, 1e-3, 1e-5 + (1e-3 - 1e-5) / 2, 1e-5])
    paper = TrainConfig()  # multistep: the step is ignored, the epoch decides
    assert lr_at_step(7, epoch=31, total_steps=10, config=paper) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="linear")


def test_min_steps_raise_the_epochs_of_a_small_set(tmp_path: Path) -> None:
    assert planned_epochs(TrainConfig(epochs=50, min_steps=1500), 4) == 375
    assert planned_epochs(TrainConfig(epochs=50, min_steps=1500), 2472) == 50  # XD-Violence keeps its epochs
    _planted(tmp_path / "feats", 8, seed=1)
    config = TrainConfig(epochs=1, min_steps=9, batch_size=4, schedule="cosine", warmup_steps=2, lr_decay=0.1)
    run = train(tmp_path / "feats", out_dir=tmp_path / "run", config=config)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4, 5]  # 2 steps per epoch, 9 steps -> 5 epochs
    assert lines[-1]["lr"] == pytest.approx(1e-5)  # ends at lr * lr_decay


# --- early stopping on held-out training videos ------------------------------------------------


def test_early_stopping_keeps_the_weights_with_the_lowest_heldout_loss_and_resumes(tmp_path: Path) -> None:

    _planted(tmp_path / "feats", 16, seed=2)
    data = open_training_set(tmp_path / "feats")
    heldout = [v for v in data.videos if v.startswith(("vid000", "vid001", "vid002", "vid003"))]
    trained = [v for v in data.videos if v not in heldout]
    config = TrainConfig(epochs=8, batch_size=4, lr=1e-3, early_stopping=True, select_every_steps=5, seed=4)
    run = train(tmp_path / "feats", out_dir=tmp_path / "run", config=config, videos=trained, heldout=heldout)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    scored = {x["epoch"]: x["heldout_loss"] for x in lines if "heldout_loss" in x}
    assert sorted(scored) == [2, 4, 5, 7, 8]  # 3 steps per epoch: each epoch passing a multiple of 5 steps, the last
    selected = json.loads((run / "summary.json").read_text())["selected_epoch"]
    assert scored[selected] == min(scored.values())
    held = data.__class__(**{**data.__dict__, "items": tuple(i for i in data.items if i.video in heldout)})
    again = heldout_scores(load_run(run).model, held, block_len=3, top_fraction=1 / 16)
    assert again["heldout_loss"] == pytest.approx(scored[selected], rel=1e-5)  # the saved weights are those
    assert json.loads((run / "config.json").read_text())["selection"]["videos"] == sorted(heldout)

    half = train(
        tmp_path / "feats",
        out_dir=tmp_path / "half",
        config=TrainConfig(**{**config.__dict__, "epochs": 5}),
        videos=trained,
        heldout=heldout,
    )
    resume(half, epochs=8)
    a, b = load_file(run / "weights.safetensors"), load_file(half / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((half / "summary.json").read_text())["selected_epoch"] == selected


def test_heldout_videos_must_not_be_trained_on(tmp_path: Path) -> None:
    from vadpipe.errors import ConfigError

    _planted(tmp_path / "feats", 6, seed=5)
    videos = open_training_set(tmp_path / "feats").videos
    with pytest.raises(ConfigError, match="also trained on"):
        train(
            tmp_path / "feats",
            out_dir=tmp_path / "run",
            config=TrainConfig(epochs=1, early_stopping=True),
            videos=videos,
            heldout=videos[:1],
        )


# --- the recipes -------------------------------------------------------------------------------


def test_paper_recipe_is_the_authors_configuration() -> None:
    from vadpipe.errors import ConfigError
    from vadpipe.run_calibration import CalibrationSpec

    paper = recipe("paper").training
    assert paper == TrainConfig() and recipe("paper").calibration is None  # every video trained on, fixed 0.35
    assert recipe("default").calibration == CalibrationSpec(holdout_fraction=0.25)
    assert (
        paper.epochs,
        paper.batch_size,
        paper.lr,
        paper.lr_milestone_epoch,
        paper.loss.normalize,
        paper.loss.w_mil,
        paper.balanced,
        paper.schedule,
        paper.min_steps,
        paper.early_stopping,
    ) == (50, 8, 1e-4, 30, "steps", 0.0, False, "multistep", 0, False)
    default = recipe("default").training
    assert default.model == paper.model and not default.align and default.block_len == 3
    assert (default.loss.w_sparsity, default.loss.w_smooth) == (2e-3, 2e-8)  # the paper's model and loss terms
    assert (default.views, default.loss.w_align, default.loss.w_mil, default.loss.normalize) == (
        "phase",
        0.05,
        1.0,
        "video",
    )
    assert paper.loss.view_scaling == "code" and default.loss.view_scaling == "once"  # with --align: K once
    with pytest.raises(ConfigError, match="recipe must be one of default, paper, got 'fast'"):
        recipe("fast")


def test_a_recipe_changes_only_the_fields_asked_for() -> None:
    from vadpipe.errors import ConfigError

    base = recipe("default")
    changed = base.replaced(training={"lr": 3e-4}, loss={"w_mil": 0.5}, calibration={"method": "isotonic"})
    assert (changed.training.lr, changed.training.loss.w_mil, changed.calibration.method) == (3e-4, 0.5, "isotonic")
    assert changed.training == replace(base.training, lr=3e-4, loss=replace(base.training.loss, w_mil=0.5))
    assert changed.calibration.holdout_fraction == 0.25 and base.training.lr == 1e-4  # the registry is untouched
    assert base.replaced(calibration={"holdout_fraction": 0}).calibration is None
    held = recipe("paper").replaced(calibration={"holdout_fraction": 0.5})
    assert held.calibration.holdout_fraction == 0.5 and held.training == recipe("paper").training
    with pytest.raises(ConfigError, match="lr must be > 0"):
        base.replaced(training={"lr": -1.0})


def test_train_help_prints_the_registry_defaults_and_the_cli_applies_only_given_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vadpipe.cli import main
    from vadpipe.cmd_train import train as command

    assert list(command.params[[p.name for p in command.params].index("recipe")].type.choices) == list(RECIPES)
    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert "[default: 4 (default recipe), 1 (paper)]" in text and "[default: 0.05]" in text
    keys = " ".join(CliRunner().invoke(main, ["train", "--help-keys"]).output.split())
    assert "[default: cosine (default recipe), multistep (paper)]" in keys
    assert "[default: 0.25 (default recipe), 0 (paper)]" in keys and "[default: mlp]" in keys
    assert "view_scaling [authors|once] [default: once (default recipe), authors (paper)]" in keys
    _planted(tmp_path / "feats", 4, seed=9)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--features",
            str(tmp_path / "feats"),
            "--run",
            str(tmp_path / "run"),
            "--recipe",
            "paper",
            "--epochs",
            "1",
            "--lr",
            "3e-4",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = load_run(tmp_path / "run").config
    assert saved.training == replace(
        recipe("paper").training,
        epochs=1,
        lr=3e-4,
        model=replace(recipe("paper").training.model, feature_dim=saved.model.feature_dim),
    )


@pytest.mark.slow
def test_default_recipe_learns_the_planted_segments(tmp_path: Path) -> None:
    _planted(tmp_path / "train", 24, seed=0)
    truth = _planted(tmp_path / "heldout", 12, seed=100)
    data = open_training_set(tmp_path / "train")
    heldout = data.videos[:6]
    config = replace(recipe("default").training, min_steps=150, warmup_steps=20)
    run = train(
        tmp_path / "train",
        out_dir=tmp_path / "run",
        config=config,
        videos=[v for v in data.videos if v not in heldout],
        heldout=heldout,
    )
    assert _frame_auc(load_run(run).model, tmp_path / "heldout", truth) > 0.9


def test_a_cosine_run_cannot_be_extended_and_early_stopping_needs_heldout_videos(tmp_path: Path) -> None:
    from vadpipe.errors import ConfigError
    from vadpipe.model.data import DataWarning

    _planted(tmp_path / "feats", 6, seed=6)
    config = TrainConfig(epochs=2, batch_size=4, schedule="cosine", warmup_steps=1, early_stopping=True)
    with pytest.warns(DataWarning, match="early stopping needs held-out videos"):
        run = train(tmp_path / "feats", out_dir=tmp_path / "run", config=config)
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["training"]["early_stopping"] is False and recorded["selection"] is None  # what really ran
    with pytest.raises(ConfigError, match="cosine schedule, which ends where the run ends"):
        resume(run, epochs=4)
