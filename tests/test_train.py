"""Training: batched == one sequence at a time, learning a planted anomaly, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from vadpipe.errors import CheckpointError, ConfigError
from vadpipe.model.augment import view_indices
from vadpipe.model.config import TrainConfig
from vadpipe.model.losses import LossConfig
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import load_run
from vadpipe.model.samplers import make_batch
from vadpipe.model.schedules import lr_at_epoch
from vadpipe.model.train import batch_loss, resume, train
from vadpipe.model.validation import ValidationSpec

DIM = 32
SHIFTED_DIMS = 8


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _planted(folder: Path, n_videos: int, *, seed: int) -> dict[str, np.ndarray]:
    """Bare XD-style features; odd videos are anomalous, with +0.5 on a few dims over a segment.

    Returns per video the planted clip labels (T,) bool.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n_videos):
        anomalous = i % 2 == 1
        n_clips = int(rng.integers(20, 61))
        x = np.abs(rng.normal(0, 0.5, (n_clips, DIM))).astype(np.float32)
        labels = np.zeros(n_clips, dtype=bool)
        if anomalous:
            length = int(rng.integers(n_clips // 5, n_clips // 2))
            start = int(rng.integers(0, n_clips - length + 1))
            x[start : start + length, :SHIFTED_DIMS] += 0.5
            labels[start : start + length] = True
        name = f"vid{i:03d}_label_{'B1-0-0' if anomalous else 'A'}"
        np.save(folder / f"{name}__0.npy", x)
        truth[name] = labels
    return truth


def _frame_auc(model: CSLTAL, folder: Path, truth: dict[str, np.ndarray]) -> float:
    """Frame-level AUC of the weighted T-CAM (each clip's score repeated over its 16 frames)."""
    scores, labels = [], []
    with torch.no_grad():
        for name, clip_labels in truth.items():
            x = torch.from_numpy(np.load(folder / f"{name}__0.npy"))[None]
            scores.append(np.repeat(model.eval()(x).weighted_tcam[0].numpy(), 16))
            labels.append(np.repeat(clip_labels, 16))
    return roc_auc_score(np.concatenate(labels), np.concatenate(scores))


# --- batched == one sequence at a time ------------------------------------------------------


def _looped_loss(model: CSLTAL, views: list[list[torch.Tensor]], labels: list[float], w: LossConfig) -> torch.Tensor:
    """The authors' loop, written out from model/README.md §3: each view alone through the model."""
    bce = sparsity = smoothness = alignment = mil = 0.0
    n_steps = sum(len(v) for sample in views for v in sample)
    n_views = sum(len(sample) for sample in views)
    for sample, label in zip(views, labels):
        lams = []
        for view in sample:
            out = model(view[None])
            lam = out.attention[0]
            bce = bce + F.binary_cross_entropy(out.video_score[0], torch.tensor(label))
            sparsity = sparsity + lam.abs().sum()
            smoothness = smoothness + (lam[1:] - lam[:-1]).square().sum()
            k = max(1, int(len(lam) * w.mil_top_fraction))
            top = out.weighted_tcam[0].topk(k).values.mean()
            mil = mil + F.binary_cross_entropy(top, torch.tensor(label))
            lams.append(lam)
        if len(lams) == 2:
            alignment = alignment + (lams[0] - lams[1]).square().mean()
    return (
        bce / n_views
        + w.w_smooth * smoothness
        + w.w_sparsity * sparsity
        + w.w_align * alignment
        + w.w_mil * mil / n_views
    ) / n_steps


@pytest.mark.parametrize(
    ("attention", "n_views", "weights"),
    [
        ("mlp", 2, LossConfig()),
        ("mlp", 2, LossConfig(w_sparsity=1.0, w_smooth=1.0, w_align=1.0)),
        ("gated", 2, LossConfig(w_sparsity=1.0, w_smooth=1.0, w_align=1.0)),
        ("mlp", 1, LossConfig(w_sparsity=0.5, w_smooth=0.5)),
        ("mlp", 2, LossConfig(w_mil=1.0, mil_top_fraction=0.25)),  # the default recipe's MIL term
    ],
)
def test_batched_loss_and_gradients_equal_the_sequence_loop(attention: str, n_views: int, weights: LossConfig) -> None:
    torch.manual_seed(0)
    model = CSLTAL(ModelConfig(attention=attention, feature_dim=64))
    rng = np.random.default_rng(0)
    arrays = [rng.random((n, 64), dtype=np.float32) for n in (40, 7, 5, 23, 1)]  # T <= 6: whole sequence
    views = [view_indices(len(a), n_views=n_views, rng=rng) for a in arrays]
    labels = [1, 0, 1, 0, 1]

    terms = batch_loss(model, make_batch(arrays, views, labels), loss_config=weights)
    terms.total.backward()
    batched = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    looped = _looped_loss(
        model, [[torch.from_numpy(a[i]) for i in v] for a, v in zip(arrays, views)], [float(y) for y in labels], weights
    )
    looped.backward()

    assert terms.n_steps == n_views * (13 + 2 + 5 + 7 + 1)
    torch.testing.assert_close(terms.total, looped, rtol=1e-5, atol=1e-7)
    for name, param in model.named_parameters():
        torch.testing.assert_close(batched[name], param.grad, rtol=1e-5, atol=1e-5, msg=f"gradient of {name}")
    assert any(g.abs().max() > 1e-4 for g in batched.values())


def test_lr_schedule_is_one_multistep_milestone() -> None:
    config = TrainConfig()
    lrs = [lr_at_epoch(e, config=config) for e in (1, 30, 31, 50)]
    assert lrs == [1e-4, 1e-4, pytest.approx(1e-5), pytest.approx(1e-5)]
    assert lr_at_epoch(11, config=TrainConfig(lr_milestone_epoch=10)) == pytest.approx(1e-5)


# --- learning, validation and the run folder ------------------------------------------------


@pytest.mark.slow
def test_training_finds_the_planted_segments(tmp_path: Path) -> None:
    _planted(tmp_path / "train", 32, seed=0)
    truth = _planted(tmp_path / "heldout", 20, seed=100)
    annotations = tmp_path / "annotations.txt"  # clip i covers frames [16 i, 16 i + 16)
    annotations.write_text(
        "\n".join(
            f"{name} {16 * int(np.flatnonzero(lab)[0])} {16 * (int(np.flatnonzero(lab)[-1]) + 1)}"
            for name, lab in truth.items()
            if lab.any()
        )
    )

    torch.manual_seed(1)
    untrained = _frame_auc(CSLTAL(ModelConfig(feature_dim=DIM)), tmp_path / "heldout", truth)
    run = train(
        tmp_path / "train",
        out_dir=tmp_path / "run",
        config=TrainConfig(epochs=30),
        validation=ValidationSpec(tmp_path / "heldout", annotations, every_epochs=10),
    )

    trained = _frame_auc(load_run(run).model, tmp_path / "heldout", truth)
    assert trained > 0.9 and trained > untrained + 0.1, (untrained, trained)

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, 31))
    assert [line["epoch"] for line in lines if "val_frame_auc" in line] == [10, 20, 30]
    assert lines[-1]["val_frame_auc"] > 0.9 and lines[-1]["val_video_auc"] > 0.9
    assert lines[0]["loss"] > lines[-1]["loss"]
    assert lines[-1]["loss_mil"] == 0  # the paper's loss has no MIL term
    parts = sum(lines[-1][f"loss_{p}"] for p in ("bce", "sparsity", "smoothness", "alignment"))
    assert parts == pytest.approx(lines[-1]["loss"], rel=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last_epoch"]["epoch"] == 30 and summary["last_validation"]["epoch"] == 30
    best = summary["best_epoch"]["val_frame_auc"]
    assert best["value"] == max(line["val_frame_auc"] for line in lines if "val_frame_auc" in line)

    config = json.loads((run / "config.json").read_text())
    assert config["schema_version"] == 1 and config["extraction"] is None
    assert config["model"] == {"attention": "mlp", "feature_dim": DIM, "kernel_size": 5}
    assert config["training"]["loss"] == {
        "w_sparsity": 2e-3,
        "w_smooth": 2e-8,
        "w_align": 0.5,
        "normalize": "steps",
        "w_mil": 0.0,
        "mil_top_fraction": 1 / 16,
        "view_scaling": "code",
    }
    assert (config["training"]["seed"], config["training"]["n_views"], config["training"]["batch_size"]) == (1, 2, 8)
    assert config["data"]["videos_per_class"] == {"normal": 16, "anomalous": 16}
    assert config["validation"]["every_epochs"] == 10 and config["vadpipe_version"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["state-e0030.safetensors", "state.json"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "weights.safetensors")


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time_s"} for line in lines]


def test_same_seed_is_bit_for_bit_and_resume_continues_exactly(tmp_path: Path) -> None:
    _planted(tmp_path / "feats", 12, seed=3)
    config = TrainConfig(epochs=4, batch_size=4, seed=5)
    first = train(tmp_path / "feats", out_dir=tmp_path / "a", config=config)
    second = train(tmp_path / "feats", out_dir=tmp_path / "b", config=config)
    assert _same_weights(first, second)
    assert _metrics(first) == _metrics(second)
    other = train(tmp_path / "feats", out_dir=tmp_path / "c", config=TrainConfig(epochs=1, batch_size=4, seed=6))
    assert _metrics(other)[0]["loss"] != _metrics(first)[0]["loss"]
    assert not torch.equal(_weights(other)["conv.weight"], _weights(first)["conv.weight"])

    half = train(tmp_path / "feats", out_dir=tmp_path / "d", config=TrainConfig(epochs=2, batch_size=4, seed=5))
    resume(half, epochs=4)
    assert _same_weights(half, first)
    assert _metrics(half) == _metrics(first)
    assert json.loads((half / "config.json").read_text())["training"]["epochs"] == 4

    with pytest.raises(ConfigError, match="already trained for 4 epochs"):
        resume(half, epochs=3)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(tmp_path / "feats", out_dir=half, config=config)
    np.save(tmp_path / "feats" / "extra_label_A__0.npy", np.ones((9, DIM), np.float32))
    with pytest.raises(CheckpointError, match="changed since the run started"):
        resume(half, epochs=5)


def test_no_align_uses_one_view_and_validation_needs_matching_width(tmp_path: Path) -> None:
    _planted(tmp_path / "feats", 6, seed=4)
    run = train(tmp_path / "feats", out_dir=tmp_path / "run", config=TrainConfig(epochs=1, align=False))
    line = _metrics(run)[0]
    assert line["loss_alignment"] == 0 and json.loads((run / "config.json").read_text())["training"]["n_views"] == 1
    (tmp_path / "wide").mkdir()
    np.save(tmp_path / "wide" / "w_label_A__0.npy", np.ones((9, DIM + 1), np.float32))
    (tmp_path / "ann.txt").write_text("other 0 16\n")
    with pytest.raises(ConfigError, match="validation features are 33 wide"):
        train(
            tmp_path / "feats",
            out_dir=tmp_path / "run2",
            config=TrainConfig(epochs=1),
            validation=ValidationSpec(tmp_path / "wide", tmp_path / "ann.txt"),
        )


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr_decay must be in"):
        TrainConfig(lr_decay=0.0)
    config = TrainConfig(align=False, loss=LossConfig(w_align=0.1))
    assert TrainConfig.from_dict(config.to_dict(), model=config.model.to_dict()) == config
