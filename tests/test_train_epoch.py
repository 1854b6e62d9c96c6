"""The fast epoch: the batched, preloaded epoch equals the authors' one-sequence loop step by step,
and the active-taps conv trains bit for bit like the full-weight conv it replaced."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vadpipe.model.augment import view_indices
from vadpipe.model.config import TrainConfig
from vadpipe.model.data import load_item, preload
from vadpipe.model.labels import open_training_set
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.samplers import epoch_batches, iterate_batches
from vadpipe.model.train import batch_loss, make_optimizer, train_epoch
from vadpipe.recipes import RECIPES

DIM = 32

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _features(folder: Path, lengths: list[int], *, seed: int) -> Path:
    """Bare XD-style crop files, alternately normal and anomalous."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(lengths):
        tag = "B1-0-0" if i % 2 else "A"
        np.save(folder / f"v{i:02d}_label_{tag}__0.npy", np.abs(rng.normal(0, 0.5, (n, DIM))).astype(np.float32))
    return folder


class _AuthorsModel(nn.Module):
    """The authors' forward on one sequence: the full 5-tap conv1d with the weight masked, no batch."""

    def __init__(self, start: CSLTAL) -> None:
        super().__init__()
        self.conv = nn.Conv1d(DIM, DIM, 5, padding=2)
        self.attention = nn.Sequential(
            nn.Linear(DIM, DIM), nn.ReLU(), nn.Linear(DIM, 256), nn.ReLU(), nn.Linear(256, 1)
        )
        self.classifier = nn.Sequential(nn.Linear(DIM, 512), nn.ReLU(), nn.Linear(512, 1))
        self.load_state_dict(start.state_dict())
        self.register_buffer("mask", (torch.arange(5) < 3).float().expand(DIM, DIM, 5).clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.conv1d(x.t()[None], self.conv.weight * self.mask, self.conv.bias, padding=2)[0].t()
        lam = torch.sigmoid(self.attention(hidden))[:, 0]
        return lam, torch.sigmoid(self.classifier((lam[:, None] * x).sum(0)))[0]


def _authors_epoch(
    model: _AuthorsModel, optimizer: torch.optim.Optimizer, data, config: TrainConfig, epoch: int
) -> list[float]:
    """model/README.md §2-§3 one sample at a time: each crop file read per sample, each view its own forward."""
    rng = np.random.default_rng([config.seed, epoch])
    w, losses = config.loss, []
    for batch in epoch_batches([i.label for i in data.items], batch_size=config.batch_size, balanced=False, rng=rng):
        bce = sparsity = smoothness = alignment = 0.0
        n_steps = n_views = 0
        for index in batch:
            item = data.items[index]
            array = np.load(item.path)
            lams = []
            for rows in view_indices(len(array), n_views=config.n_views, block_len=config.block_len, rng=rng):
                lam, score = model(torch.from_numpy(array[rows]))
                bce = bce + F.binary_cross_entropy(score, torch.tensor(float(item.label)))
                sparsity = sparsity + lam.abs().sum()
                smoothness = smoothness + (lam[1:] - lam[:-1]).square().sum()
                lams.append(lam)
                n_steps, n_views = n_steps + len(rows), n_views + 1
            if len(lams) == 2:
                alignment = alignment + (lams[0] - lams[1]).square().mean()
        loss = (bce / n_views + w.w_smooth * smoothness + w.w_sparsity * sparsity + w.w_align * alignment) / n_steps
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_paper_epochs_equal_the_authors_loop_batch_by_batch(tmp_path: Path) -> None:
    # lengths from 1 to 61: whole sequences (T <= 6), dropped tails (T mod 3), a last batch of 3
    data = open_training_set(_features(tmp_path / "f", [61, 5, 1, 17, 40, 9, 6, 33, 22, 7, 50], seed=0))
    config = replace(RECIPES["paper"].training, batch_size=4, model=ModelConfig(feature_dim=DIM))
    torch.manual_seed(config.seed)
    model = CSLTAL(config.model)
    authors = _AuthorsModel(model)
    optimizer, authors_optimizer = make_optimizer(model, config=config), torch.optim.Adam(authors.parameters(), lr=1e-4)
    features = preload(data)
    for epoch in (1, 2):
        steps: list[dict[str, float]] = []
        line = train_epoch(
            model, optimizer, data, config=config, epoch=epoch, on_step=steps.append, total_epochs=50, features=features
        )
        expected = _authors_epoch(authors, authors_optimizer, data, config, epoch)
        assert len(steps) == len(expected) == 3
        np.testing.assert_allclose([s["total"] for s in steps], expected, rtol=2e-5)
        assert line["loss"] == pytest.approx(np.mean(expected), rel=2e-5)
    # the weights followed the same path (the masked taps play no part)
    active = authors.conv.weight[:, :, :3]
    torch.testing.assert_close(model.conv.weight[:, :, :3], active, rtol=1e-4, atol=1e-6)


def test_epoch_sums_without_a_step_callback_equal_those_with_one(tmp_path: Path) -> None:
    data = open_training_set(_features(tmp_path / "f", [30, 12, 8, 25, 19, 4], seed=1))
    config = replace(RECIPES["paper"].training, batch_size=2, model=ModelConfig(feature_dim=DIM))
    lines = []
    for on_step in (None, [].append):
        torch.manual_seed(0)
        model = CSLTAL(config.model)
        lines.append(
            train_epoch(
                model,
                make_optimizer(model, config=config),
                data,
                config=config,
                epoch=1,
                on_step=on_step,
                total_epochs=50,
            )
        )
    assert lines[0] == lines[1]
    assert lines[0]["loss"] == pytest.approx(
        sum(lines[0][f"loss_{p}"] for p in ("bce", "sparsity", "smoothness", "alignment", "mil")), rel=1e-6
    )


def test_preloaded_features_make_the_same_batches_as_reading_files(tmp_path: Path) -> None:
    data = open_training_set(_features(tmp_path / "f", [14, 3, 27, 9, 6], seed=2))
    features = preload(data)
    assert features is not None and len(features) == len(data.items)
    for item, array in zip(data.items, features):
        np.testing.assert_array_equal(array, load_item(item, feature_dim=DIM))
    config = TrainConfig(batch_size=2)
    for read, kept in zip(
        iterate_batches(data, config=config, epoch=3),
        iterate_batches(data, config=config, epoch=3, features=features),
        strict=True,
    ):
        for field in ("x", "mask", "labels"):
            assert torch.equal(getattr(read, field), getattr(kept, field))
    needed = sum(i.n_steps for i in data.items) * DIM * 4
    assert preload(data, max_bytes=needed) is not None
    assert preload(data, max_bytes=needed - 1) is None  # too big: each batch reads its files


class _FullWeightConv(nn.Conv1d):
    """The conv vadpipe had before: the full (F, F, k) parameter, sliced to its active taps per
    forward, on every view step's own copy of its row."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2)
        self.n_active = kernel_size // 2 + 1

    def forward_packed(
        self, x: torch.Tensor, positions: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x if source is None else x[source]  # one copy per view step
        pad, columns = self.n_active - 1, []
        for lag in range(pad, -1, -1):
            if lag == 0:
                columns.append(x)
            else:
                shifted = torch.cat([x.new_zeros(min(lag, x.shape[0]), x.shape[1]), x[:-lag]])
                columns.append(shifted * (positions >= lag).unsqueeze(1).to(x.dtype))
        weight = self.weight[:, :, : self.n_active].permute(0, 2, 1).reshape(self.out_channels, -1)
        return F.linear(torch.cat(columns, dim=1), weight, self.bias)


@pytest.mark.parametrize("recipe", ["paper", "default"])
def test_active_taps_conv_trains_like_the_full_weight_conv(tmp_path: Path, recipe: str) -> None:
    """The conv's products on shared rows sum in another order than before: equal to float
    rounding after 6 Adam steps (the recipes' behaviour is unchanged)."""
    data = open_training_set(_features(tmp_path / "f", [40, 7, 21, 5, 33, 12, 18, 9], seed=3))
    config = replace(RECIPES[recipe].training, batch_size=4, model=ModelConfig(feature_dim=DIM))
    torch.manual_seed(config.seed)
    model = CSLTAL(config.model)
    torch.manual_seed(config.seed)
    before = CSLTAL(config.model)
    before.conv = _FullWeightConv(DIM, 5)
    before.load_state_dict(model.state_dict())  # the same init (tested in test_net), full layout
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizers = [make_optimizer(m, config=config) for m in (model, before)]
    for epoch in (1, 2):
        for batch in iterate_batches(data, config=config, epoch=epoch):
            for m, optimizer in zip((model, before), optimizers):
                optimizer.zero_grad(set_to_none=True)
                batch_loss(m, batch, loss_config=config.loss).total.backward()
                optimizer.step()
    after, reference = model.state_dict(), before.state_dict()
    for name, value in reference.items():
        torch.testing.assert_close(after[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert (after["conv.weight"] - initial["conv.weight"]).abs().max() > 1e-5  # it did train


def test_resume_reads_checkpoints_of_the_full_weight_layout(tmp_path: Path) -> None:
    """A checkpoint written before the conv kept only its active taps (Adam moments of the full
    (F, F, 5) weight, named conv.weight) resumes to the same weights as an uninterrupted run."""
    import hashlib
    import json

    from safetensors.torch import load as load_safetensors
    from safetensors.torch import save as save_safetensors

    from vadpipe.model.train import resume, train

    features = _features(tmp_path / "f", [30, 12, 8, 25, 19, 4, 16, 22], seed=4)
    config = TrainConfig(epochs=3, batch_size=4, seed=2)
    whole = train(features, out_dir=tmp_path / "whole", config=config)
    half = train(features, out_dir=tmp_path / "half", config=replace(config, epochs=2))
    state_file = half / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    tensors = load_safetensors((half / "checkpoint" / state["tensors"]).read_bytes())
    for kind in ("exp_avg", "exp_avg_sq"):
        taps = tensors.pop(f"adam.conv.taps.{kind}")  # (3, F, F): taps[j] = W_j
        full = torch.zeros(DIM, DIM, 5)
        full[:, :, :3] = taps.permute(1, 2, 0)
        tensors[f"adam.conv.weight.{kind}"] = full
    state["adam_steps"]["conv.weight"] = state["adam_steps"].pop("conv.taps")
    data = save_safetensors(tensors)
    (half / "checkpoint" / state["tensors"]).write_bytes(data)
    state["sha256"] = hashlib.sha256(data).hexdigest()
    state_file.write_text(json.dumps(state))
    resume(half, epochs=3)
    a = load_safetensors((whole / "weights.safetensors").read_bytes())
    b = load_safetensors((half / "weights.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
