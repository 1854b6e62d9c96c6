"""Backbone identity of runs: train records it, detect extracts only with it and never guesses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vadpipe.cli import main
from vadpipe.extract.backbones import IMAGENET, SCRATCH
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import save_run

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _bare_features(root, n_videos: int = 4):
    """Feature files without vadpipe records, named as in the XD-Violence release."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_videos):
        name = f"v{i}_label_A" if i % 2 else f"v{i}_label_B1-0-0"
        np.save(root / f"{name}__0.npy", rng.normal(size=(12, 1024)).astype(np.float32))
    return root


def _train(tmp_path, features, *extra) -> tuple[object, dict]:
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--features",
            str(features),
            "--run",
            str(out),
            "--epochs",
            "1",
            "--set",
            "min_steps=0",
            "--set",
            "holdout_fraction=0",
            "--batch-size",
            "2",
            "-q",
            *extra,
        ],
    )
    return result, (json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {})


def _detect(tmp_path, run, video, *extra):
    return CliRunner(env={"VADPIPE_HOME": str(tmp_path / "ws")}).invoke(
        main, ["detect", str(video), "--run", str(run), "--device", "cpu", "-q", *extra]
    )


def test_train_records_the_backbone_of_bare_features_only_when_told(tmp_path):
    features = _bare_features(tmp_path / "xd")
    result, config = _train(tmp_path, features)
    assert result.exit_code == 0, result.output
    assert config["backbone"]["id"] is None and config["backbone"]["source"] == "unknown"
    assert "unknown" in result.stderr and "--backbone kinetics400-imagenet" in result.stderr
    result, config = _train(tmp_path, features, "--backbone", IMAGENET.id)
    assert result.exit_code == 0, result.output
    assert config["backbone"] == {"id": IMAGENET.id, "source": "stated", "note": config["backbone"]["note"]}
    assert "on the user's word" in config["backbone"]["note"] and "unknown" not in result.stderr


def test_features_backbone_must_agree_with_cache_records(tmp_path):
    features = _bare_features(tmp_path / "cache")
    settings = ExtractionSettings().with_weights(SCRATCH.weights_id)
    from vadpipe.model.provenance import training_backbone

    extraction = {"settings": settings.to_dict(), "settings_key": settings.key()}
    assert training_backbone(extraction, stated=None, features=features) == {"id": SCRATCH.id, "source": "records"}
    old = {"settings": {k: v for k, v in settings.to_dict().items() if k != "backbone"}}  # a record before backbones
    assert training_backbone(old, stated=None, features=features)["id"] == SCRATCH.id
    from vadpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="records of .* say its features were extracted with kinetics400-scratch"):
        training_backbone(extraction, stated=IMAGENET.id, features=features)


def _run_with(tmp_path, name, config):
    torch.manual_seed(0)
    return save_run(tmp_path / name, CSLTAL(ModelConfig()), config={"training": {"block_len": 3}, **config})


def test_detect_refuses_weights_of_another_backbone_than_the_model_s(tmp_path, make_video, i3d_cpu):
    from vadpipe.extract.weights import resolve_weights

    scratch_weights, _ = resolve_weights()
    video = make_video("clip.mp4", n_frames=20)
    # trained on bare features said to be the ImageNet network's (the released XD-Violence files)
    imagenet_run = _run_with(tmp_path, "imagenet", {"backbone": {"id": IMAGENET.id, "source": "stated"}})
    result = _detect(tmp_path, imagenet_run, video, "--weights", str(scratch_weights))
    assert result.exit_code == 2, result.output
    assert "trained on kinetics400-imagenet features" in result.stderr and "is kinetics400-scratch" in result.stderr
    # the same pair through --backbone: a run recording its backbone refuses another
    scratch = ExtractionSettings().with_weights(SCRATCH.weights_id)
    scratch_run = _run_with(
        tmp_path, "scratch", {"extraction": {"settings": scratch.to_dict(), "settings_key": scratch.key()}}
    )
    result = _detect(tmp_path, scratch_run, video, "--backbone", IMAGENET.id)
    assert result.exit_code == 2, result.output
    assert "trained on kinetics400-scratch features; --backbone kinetics400-imagenet" in result.stderr
    assert not (tmp_path / "ws" / "features").exists() or not list((tmp_path / "ws" / "features").glob("*.npy"))


def test_detect_will_not_guess_the_backbone_of_a_run_that_does_not_know_it(tmp_path, make_video, monkeypatch):
    monkeypatch.setenv("VADPIPE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("VADPIPE_I3D_WEIGHTS", raising=False)
    video = make_video("clip.mp4", n_frames=20)
    unknown = _run_with(tmp_path, "unknown", {})
    result = _detect(tmp_path, unknown, video)
    assert result.exit_code == 2, result.output
    assert "unknown origin" in result.stderr and "--backbone kinetics400-imagenet" in result.stderr
    # told, it extracts with that network, which here is not at hand: the error names what to download
    result = _detect(tmp_path, unknown, video, "--backbone", IMAGENET.id)
    assert result.exit_code == 2, result.output
    assert "data/checkpoints/rgb_imagenet" in result.stderr and "rgb_imagenet.pt" in result.stderr


def test_evaluate_refuses_a_cache_of_another_backbone_than_the_model_s(tmp_path):
    from dataclasses import replace

    from vadpipe.errors import ConfigError
    from vadpipe.model.data import scan_features
    from vadpipe.postprocess.evaluate import check_features_match_run

    scratch = ExtractionSettings().with_weights(SCRATCH.weights_id)
    cache = replace(
        scan_features(_bare_features(tmp_path / "c")),
        extraction={"settings": scratch.to_dict(), "settings_key": scratch.key()},
    )
    from vadpipe.model.run_config import RunConfig

    def run(backbone: dict) -> RunConfig:
        return RunConfig.from_dict(
            {"schema_version": 1, "model": {"feature_dim": 1024}, "backbone": backbone}, where="config.json"
        )

    imagenet_run = run({"id": IMAGENET.id, "source": "stated"})
    with pytest.raises(ConfigError, match="trained on kinetics400-imagenet features, but .* holds kinetics400-scratch"):
        check_features_match_run(imagenet_run, cache)
    check_features_match_run(run({"id": SCRATCH.id}), cache)
