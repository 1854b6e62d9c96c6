"""``vadpipe detect`` uses what the video job returned: a cached video's feature files are read
once and hashed at most once (by the job's skip check), the inputs are walked once and the
device is chosen once, and the intervals are the same bytes as when the features were computed."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vadpipe.detect
from vadpipe.cli import main
from vadpipe.extract import cache, discovery, encoder
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.model.net import CSLTAL, ModelConfig
from vadpipe.model.run import save_run

pytestmark = pytest.mark.slow  # the real I3D computes the one clip of the first detect

FEATURE_FILE = re.compile(r"__\d+\.npy$")


@pytest.fixture
def run_dir(i3d_cpu, tmp_path):
    """An untrained run whose extraction settings are the default ones (enough for detect)."""
    settings = ExtractionSettings().with_weights(i3d_cpu[1])
    torch.manual_seed(0)
    return save_run(
        tmp_path / "run",
        CSLTAL(ModelConfig()),
        config={
            "extraction": {"settings": settings.to_dict(), "settings_key": settings.key()},
            "training": {"block_len": 3},
        },
    )


def _count(monkeypatch, counts: Counter, kind: str, name: str, *owners) -> None:
    """Count the calls of ``name`` (bound in each of ``owners``), by the file name they are given."""
    original = getattr(owners[0], name)

    def counted(*args, **kwargs):
        first = args[0] if args else None
        counts[kind, Path(first).name if isinstance(first, str | os.PathLike) else None] += 1
        return original(*args, **kwargs)

    for owner in owners:
        monkeypatch.setattr(owner, name, counted)


def test_detect_of_a_cached_video_reads_each_feature_file_once(run_dir, make_video, tmp_path, monkeypatch):
    video = make_video("clip.mp4", n_frames=16)  # one clip
    cache_dir = tmp_path / "cache"

    def detect(out: Path) -> tuple[str, Counter]:
        counts: Counter = Counter()
        with monkeypatch.context() as m:
            _count(m, counts, "load", "load", np)
            _count(m, counts, "hash", "sha256_file", cache)
            _count(m, counts, "walk", "find_videos", discovery, vadpipe.detect)
            _count(m, counts, "device", "select_device", encoder, vadpipe.detect)
            args = ["detect", str(video), "--run", str(run_dir), "--features", str(cache_dir), "--device", "cpu"]
            result = CliRunner().invoke(main, [*args, "--json", str(out), "-q"])
        assert result.exit_code == 0, result.output
        return out.read_text(), counts

    computed, first = detect(tmp_path / "computed.json")
    cached, again = detect(tmp_path / "cached.json")
    assert cached == computed  # the same intervals, byte for byte, from the cache
    assert sorted(p.name for p in cache_dir.iterdir() if FEATURE_FILE.search(p.name)) == ["clip__0.npy"]
    # computed: the job wrote the entry and handed it up; detect reads the features once, hashes nothing
    assert (first["load", "clip__0.npy"], first["hash", "clip__0.npy"], first["load", "clip.times.npy"]) == (1, 0, 0)
    # cached: the job's skip check hashes the features and reads the frame times; detect reads the features once
    assert (again["load", "clip__0.npy"], again["hash", "clip__0.npy"], again["load", "clip.times.npy"]) == (1, 1, 1)
    for counts in (first, again):
        assert sum(n for (k, _), n in counts.items() if k == "walk") == 1
        assert sum(n for (k, _), n in counts.items() if k == "device") == 1
