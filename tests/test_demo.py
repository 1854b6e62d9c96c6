"""The demo's orchestration on a miniature configuration (the full demo runs with `make demo`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from vadpipe.demo import DemoConfig, run_demo
from vadpipe.model.config import TrainConfig
from vadpipe.postprocess.intervals import validate_document
from vadpipe.synth import SplitSize, SynthConfig

pytestmark = pytest.mark.slow  # the whole demo: real I3D and training


def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path):
    config = DemoConfig(
        splits={"train": SplitSize(2, 2), "test": SplitSize(1, 1)},
        synth=SynthConfig(n_frames=(32, 48)),
        training=replace(TrainConfig(), epochs=3),
    )
    messages: list[str] = []
    report = run_demo(tmp_path / "demo", config=config, device="cpu", progress=False, say=messages.append)
    assert [m[:5] for m in messages] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert all(r.failed == [] for r in report.extract.values())
    # detection reused the test cache: nothing was extracted twice
    assert report.detection.extract_report.clips_computed == 0
    doc = json.loads(report.intervals_path.read_text())
    validate_document(doc)
    assert len(doc["videos"]) == 2
    assert all(v["ood"] is not None for v in doc["videos"])  # the demo's model can judge its footage
    assert len(report.plots) == 2 and all(p.stat().st_size > 10_000 for p in report.plots)
    assert set(report.metrics["frame"]) >= {"auc", "ap"}
    assert (tmp_path / "demo" / "runs" / "LATEST").read_text().strip() == "demo"
