"""One command reads and verifies its I3D weight file once: resolution keeps what it read and
checked (``ResolvedWeights.state``), and the network is built from that, not from a second read."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from vadpipe.cli import main
from vadpipe.detect import detect_videos, run_extraction_settings
from vadpipe.extract import weights as W
from vadpipe.extract.backbones import SCRATCH
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import load_run, save_run
from vadpipe.postprocess.intervals import OperatingPoint


@pytest.fixture
def counted(monkeypatch, i3d_cpu) -> dict[str, int]:
    """Calls of the weight file's reader and of its tensor-by-tensor verification, from now on
    (``i3d_cpu``: the weights are in the per-user cache before counting starts)."""
    monkeypatch.delenv("VADPIPE_I3D_WEIGHTS", raising=False)
    calls = {"read": 0, "verify": 0}
    read, verify = W.read_weight_file, W.identify

    def counting_read(*args, **kwargs):
        calls["read"] += 1
        return read(*args, **kwargs)

    def counting_verify(*args, **kwargs):
        calls["verify"] += 1
        return verify(*args, **kwargs)

    monkeypatch.setattr(W, "read_weight_file", counting_read)
    monkeypatch.setattr(W, "identify", counting_verify)
    return calls


def test_detect_reads_and_verifies_the_weights_once(tmp_path, make_video, counted):
    torch.manual_seed(0)
    settings = ExtractionSettings().with_weights(SCRATCH.weights_id)
    run = load_run(
        save_run(tmp_path / "run", CSLTAL(ModelConfig()), config={"extraction": {"settings": settings.to_dict()}})
    )
    result = detect_videos(
        [make_video("a.mp4")],
        run,
        cache_dir=tmp_path / "cache",
        settings=run_extraction_settings(run),
        operating_point=OperatingPoint(),
        device="cpu",
        progress=False,
    )
    assert not result.failed and result.extract_report.clips_computed > 0
    assert counted == {"read": 1, "verify": 1}


def test_vadpipe_extract_reads_and_verifies_the_weights_once(tmp_path, make_video, counted):
    video = make_video("a.mp4")
    result = CliRunner().invoke(
        main, ["extract", str(video), "--features", str(tmp_path / "c"), "--device", "cpu", "-q"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert counted == {"read": 1, "verify": 1}
