"""The Ray engine on a local 2-CPU Ray instance: the same cache as the local engine, byte for byte,
skipping and resuming the same way."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pytest

ray = pytest.importorskip("ray")

from test_workers import BATCH, SMALL, failures, make_videos, snapshot, summary  # noqa: E402

from vadpipe.extract.engines import extract_videos  # noqa: E402
from vadpipe.extract.options import RayOptions  # noqa: E402
from vadpipe.extract.ray_tasks import I3DBatchEncoder  # noqa: E402
from vadpipe.extract.settings import ExtractionSettings  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray instance and the real I3D


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance of its own: 2 CPUs, no dashboard, no auth token, its own short temp dir
    (Ray's socket paths must stay under 108 characters), shut down afterwards."""
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = tempfile.mkdtemp(prefix="vpray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


def test_ray_engine_writes_the_local_cache_byte_for_byte_and_resumes(local_ray, i3d_cpu, tmp_path):
    videos = make_videos(tmp_path / "videos")
    settings = ExtractionSettings(**SMALL)
    ref_out = tmp_path / "reference"
    ref = extract_videos(
        [videos],
        out_dir=ref_out,
        settings=settings.with_weights(i3d_cpu[1]),
        encoder=i3d_cpu[0],
        batch_size=BATCH,
        progress=False,
    )
    # a cache left by a local run that was killed: one finished entry (b/cam.mp4, named
    # cam-<sha8>), and long's feature files without their record (the record is written last)
    out = tmp_path / "ray-cache"
    out.mkdir()
    hashed = next(r.stem for r in ref.results if r.stem and r.stem.startswith("cam-"))
    for p in [*ref_out.glob(f"{hashed}*"), ref_out / "long__0.npy", ref_out / "long.times.npy"]:
        shutil.copy(p, out / p.name)
    report = extract_videos(
        [videos], out_dir=out, settings=settings, executor=RayOptions(), batch_size=BATCH, progress=False
    )
    assert snapshot(out) == snapshot(ref_out)
    # the same results, in the same order, with the same messages (the broken file included),
    # except that the finished entry was skipped
    expected = [
        (s, "skipped", stem, 1, None, None) if stem == hashed else (s, status, stem, n, e, note)
        for s, status, stem, n, e, note in summary(ref)
    ]
    assert summary(report) == expected
    assert failures(out) == failures(ref_out)
    assert report.settings_key == ref.settings_key and report.clips_computed == 5 and report.network_s > 0

    again = extract_videos(
        [videos], out_dir=out, settings=settings, executor=RayOptions(), batch_size=BATCH, progress=False
    )
    assert again.counts() == {"skipped": 5, "failed": 1} and again.clips_computed == 0
    assert snapshot(out) == snapshot(ref_out)


def test_encoder_is_a_callable_class_for_numpy_batches(i3d_cpu):
    import numpy as np

    encoder = I3DBatchEncoder(device="cpu")
    clips = np.random.default_rng(0).integers(0, 255, size=(2, 3, 16, 48, 48), dtype=np.uint8)
    out = encoder({"clips": clips})
    assert out["features"].shape == (2, 1024) and out["features"].dtype == np.float32
    assert encoder.weights_id() == i3d_cpu[1] and encoder.busy_s() > 0
