"""Run folders (load_run, LATEST, checkpoints) and the ``vadpipe train`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vadpipe.cli import main
from vadpipe.errors import CheckpointError
from vadpipe.extract.cache import CacheRecord, write_entry
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import (
    latest_run,
    load_checkpoint,
    load_run,
    new_run_dir,
    save_checkpoint,
    save_run,
    set_latest,
)

DIM = 8


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _bare_features(folder: Path, n_videos: int = 8, *, only_normal: bool = False) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_videos):
        tag = "A" if only_normal or i % 2 == 0 else "B1-0-0"
        np.save(folder / f"v{i}_label_{tag}__0.npy", rng.random((int(rng.integers(4, 20)), DIM), dtype=np.float32))
    return folder


def _model(attention: str = "mlp") -> CSLTAL:
    torch.manual_seed(0)
    return CSLTAL(ModelConfig(attention=attention, feature_dim=DIM))


# --- run folders -----------------------------------------------------------------------------


def test_save_and_load_run(tmp_path: Path) -> None:
    model = _model()
    run_dir = save_run(tmp_path / "r", model, config={"extraction": {"settings_key": "k"}})
    run = load_run(run_dir)
    assert run.path == run_dir and not run.model.training
    assert run.config.model == ModelConfig(attention="mlp", feature_dim=DIM, kernel_size=5)
    assert run.config.extraction == {"settings_key": "k"} and run.config.training is None
    assert run.config.block_len == 3 and run.config.operating_point is None
    x = torch.rand(1, 5, DIM)
    with torch.no_grad():
        torch.testing.assert_close(run.model(x).weighted_tcam, model.eval()(x).weighted_tcam, rtol=0, atol=0)


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "none")
    run_dir = save_run(tmp_path / "r", _model())
    (run_dir / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_run(run_dir)
    (run_dir / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="did not finish; resume it"):
        load_run(run_dir)
    gated = save_run(tmp_path / "g", _model("gated"))
    config = json.loads((gated / "config.json").read_text())
    config["model"]["attention"] = "mlp"
    (gated / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit the model in its config.json"):
        load_run(gated)
    (gated / "config.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(CheckpointError, match="not a vadpipe run config"):
        load_run(gated)


def test_latest_pointer(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(CheckpointError, match="no trained model: .*LATEST does not exist; run vadpipe train first"):
        latest_run(runs)
    inside = save_run(new_run_dir(runs), _model())
    assert inside.name.startswith("run-")
    assert new_run_dir(runs) != inside  # a taken name gets a suffix
    set_latest(runs, inside)
    assert (runs / "LATEST").read_text().strip() == inside.name and latest_run(runs) == inside
    outside = save_run(tmp_path / "elsewhere", _model())
    set_latest(runs, outside)
    assert latest_run(runs) == outside.resolve()
    (runs / "LATEST").write_text("gone\n")
    with pytest.raises(CheckpointError, match="names 'gone', which is not a run folder"):
        latest_run(runs)


def test_checkpoint_restores_adam_without_pickle(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.rand(2, 6, DIM)).video_score.sum().backward()
        optimizer.step()
    save_checkpoint(tmp_path, epoch=2, model=model, optimizer=optimizer)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["state-e0002.safetensors", "state.json"]

    fresh = _model("mlp")
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    assert load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt) == 2
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
        sa, sb = optimizer.state[a], fresh_opt.state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert float(sa["step"]) == float(sb["step"]) == 2

    tensors = tmp_path / "checkpoint" / "state-e0002.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))  # flip the last 4 bytes
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt)


# --- the vadpipe train command -----------------------------------------------------------------


def test_train_cli_on_bare_features(tmp_path: Path) -> None:
    feats = _bare_features(tmp_path / "feats")
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "train",
            "--features",
            str(feats),
            "--run",
            str(out),
            "--recipe",
            "paper",
            "--epochs",
            "2",
            "--set",
            "align=false",
            "--loss-weights",
            "paper",
            "--set",
            "w_smooth=0.5",
            "--set",
            "lr_milestone_epoch=1",
            "--set",
            "attention=gated",
            "--json",
            str(tmp_path / "summary.json"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    config = load_run(out).config.sections  # as written
    assert config["model"]["attention"] == "gated"
    assert config["training"]["n_views"] == 1 and config["training"]["lr_milestone_epoch"] == 1
    assert config["training"]["loss"] == {
        "w_sparsity": 2e-8,
        "w_smooth": 0.5,
        "w_align": 0.5,
        "normalize": "steps",
        "w_mil": 0.0,
        "mil_top_fraction": 1 / 16,
        "view_scaling": "code",
    }
    assert config["operating_point"]["method"] == "fixed"  # the paper's recipe trains on every video
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["lr"] for x in lines] == [1e-4, pytest.approx(1e-5)]
    assert json.loads((tmp_path / "summary.json").read_text())["run"] == str(out)
    assert not (tmp_path / "vadpipe-work").exists()  # an explicit --out elsewhere leaves LATEST alone

    result = runner.invoke(main, ["train", "--resume", str(out), "--epochs", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    result = runner.invoke(main, ["train", "--resume", str(out), "--lr", "1", "--set", "align=false"])
    assert result.exit_code == 2 and "drop --set, --lr" in result.output


@pytest.mark.slow
def test_train_cli_with_no_arguments_uses_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = tmp_path / "ws"
    monkeypatch.setenv("VADPIPE_HOME", str(workspace))
    runner = CliRunner()
    result = runner.invoke(main, ["train"])
    assert result.exit_code == 2 and "no feature cache at" in result.output and "vadpipe extract" in result.output

    rng = np.random.default_rng(1)
    for i, folder in enumerate(["normal", "anomalous", "normal", "abnormal"]):
        n_clips = 5 + i
        starts = list(range(0, 16 * n_clips, 16))
        record = {
            "schema_version": 1,
            "stem": f"clip{i}",
            "source": {"path": f"/videos/{folder}/clip{i}.mp4", "size": 1, "sha256": f"{i}" * 64},
            "video": {
                "fps": 25.0,
                "n_frames": 16 * n_clips,
                "duration_s": 0.64 * n_clips,
                "width": 64,
                "height": 48,
                "rotation": 0,
            },
            "clips": {
                "length": 16,
                "stride": 16,
                "count": n_clips,
                "start_frames": starts,
                "start_s": [s / 25 for s in starts],
                "end_s": [(s + 16) / 25 for s in starts],
            },
            "crops": ["center"],
            "status": "ok",
            "error": None,
            "extractor": {
                "settings": {"clip_len": 16},
                "settings_key": "abc123",
                "weights_sha256": "w",
                "vadpipe_version": "0.1.0",
            },
        }
        features = [rng.random((n_clips, DIM), dtype=np.float32)]
        write_entry(workspace / "features", CacheRecord.from_dict(record), features, np.arange(16 * n_clips) / 25)
    result = runner.invoke(main, ["train"])  # the default recipe on 4 tiny videos
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == workspace / "runs" and latest_run(workspace / "runs") == run_dir
    run = load_run(run_dir)
    assert run.config.extraction == {"settings": {"clip_len": 16}, "settings_key": "abc123"}
    assert run.config.data["label_sources"] == {"folder": 4}  # the cross-fitted members together saw all 4
    training = run.config.training
    assert (
        training.schedule,
        training.balanced,
        training.early_stopping,
        training.loss.normalize,
        training.loss.w_mil,
        training.min_steps,
    ) == ("cosine", True, True, "video", 1.0, 1500)
    # 2 videos of each class: 2 cross-fitted members (not 4), each holding out one video per class for early
    # stopping; all 4 videos, each scored by the member that held it out, chose the operating point
    assert "training 2 cross-fitted members instead of 4" in result.stderr
    folds = run.config.calibration["folds"]
    assert [len(f["videos"]) for f in folds] == [2, 2] and run.config.sections["ensemble"]["size"] == 2
    heldout = run.config.operating_point.entry["heldout"]["videos"]
    assert sorted(heldout) == sorted(folds[0]["videos"] + folds[1]["videos"]) and len(set(heldout)) == 4
    assert run.config.selection["videos"] is None
    assert "last epoch (1500): loss" in result.stderr  # 1 balanced batch per epoch, 1,500 steps


def test_train_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    normal_only = _bare_features(tmp_path / "normal", only_normal=True)
    result = runner.invoke(main, ["train", "--features", str(normal_only), "--run", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2 and "error: all 8 training videos are normal" in result.output
    feats = _bare_features(tmp_path / "feats")
    for args, message in [
        (["--val-features", str(feats)], "needs both --val-features and --val-annotations"),
        (["--crop-indices", "0,x"], "--crop-indices must be comma-separated"),
        (["--set", "kernel_size=4"], "kernel_size must be a positive odd int"),
        (["--set", "lr_milestone_epoch=10"], "--set lr_milestone_epoch applies to --set schedule=multistep"),
        (["--recipe", "paper", "--set", "warmup_steps=5"], "--set warmup_steps applies to --set schedule=cosine"),
        (["--set", "early_stopping=true", "--set", "holdout_fraction=0"], "holdout_fraction=0 holds out none"),
        (["--set", "w_typo=1"], "--set takes KEY=VALUE with KEY one of min_steps,"),
        (["--recipe", "fast"], "Invalid value for '--recipe'"),
        (["--set", "w_align=0.1"], "--set w_align weighs the alignment loss, which needs --set align=true"),
    ]:
        result = runner.invoke(main, ["train", "--features", str(feats), "--run", str(tmp_path / "r2"), *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_run_config_written_before_the_typed_contract_still_loads() -> None:
    """tests/data/run_config_v1.json is the config.json of a default-recipe run (early stopping and a
    calibrated operating point) as vadpipe 0.1.0 wrote it, before RunConfig existed."""
    from vadpipe.model.config import TrainConfig
    from vadpipe.model.run_config import RunConfig
    from vadpipe.postprocess.intervals import OperatingPoint

    data = json.loads((Path(__file__).parent / "data" / "run_config_v1.json").read_text())
    config = RunConfig.from_dict(data, where="run_config_v1.json")
    assert config.training == TrainConfig.from_dict(data["training"], model=data["model"])
    assert config.block_len == 3 and config.training.early_stopping and config.model.feature_dim == 64
    saved = config.operating_point
    assert (saved.method, saved.threshold, saved.video_threshold) == (
        "false_alarms",
        data["operating_point"]["threshold"],
        0.0,
    )
    op = OperatingPoint.for_run(saved, where="run_config_v1.json")
    assert op.method == "false_alarms" and op.video_calibration is not None and op.interval_calibration is not None
    assert config.selection["videos"] == config.calibration["heldout_videos"]
    assert config.sections == data  # a writer that updates one section keeps the others


def test_a_run_config_names_the_bad_section() -> None:
    from vadpipe.model.run_config import RunConfig

    good = json.loads((Path(__file__).parent / "data" / "run_config_v1.json").read_text())
    for change, message in (
        ({"schema_version": 2}, "is not a vadpipe run config"),
        ({"model": {"depth": 3}}, "bad model settings: unknown ModelConfig keys"),
        (
            {"training": {**good["training"], "block_len": 0}},
            "unusable training settings: block_len must be an int >= 1, got 0",
        ),
        ({"extraction": [1]}, "'extraction' must be an object"),
        ({"operating_point": {"threshold": "high"}}, r"operating_point.threshold must lie in \[0, 1\], got 'high'"),
    ):
        with pytest.raises(CheckpointError, match=message):
            RunConfig.from_dict({**good, **change}, where="c.json")
