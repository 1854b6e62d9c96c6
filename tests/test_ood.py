"""Outside-footage check on real footage: a model trained on time segments of a real street video
(../shared/media/bikes.mp4) does not mark its held-out segments, and does mark other footage.

The segment labels (normal / anomalous) are arbitrary: weakly supervised training needs both
classes, and the check does not depend on what the network learnt, only on the training
features. The synthetic-training-set side (a model trained on demo-like videos marks
bikes.mp4 and not its own test videos) is in test_pipeline.py, on that module's trained run.
"""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
import pytest
from conftest import REPO, moving_frames, write_video

from vadpipe.calibrated_training import train_calibrated
from vadpipe.detect import detect_videos
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.model.config import TrainConfig
from vadpipe.model.ood import load_distance
from vadpipe.model.run import load_run
from vadpipe.postprocess.intervals import OperatingPoint
from vadpipe.run_calibration import CalibrationSpec

BIKES = REPO.parent / "shared" / "media" / "bikes.mp4"
SEGMENT = 32  # frames: two 16-frame clips
TEST_SEGMENTS = (3,)

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(not BIKES.is_file(), reason=f"real footage {BIKES} not found (../shared)"),
]


@pytest.fixture(scope="module")
def bikes_run(tmp_path_factory, i3d_cpu):
    """Cut bikes.mp4 into 32-frame segments, train on six (a quarter held out), keep one for testing."""
    root = tmp_path_factory.mktemp("bikes")
    with av.open(str(BIKES)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    segments = {}
    for k in range(len(frames) // SEGMENT):
        split = "test" if k in TEST_SEGMENTS else "train"
        label = "anomalous" if k % 2 else "normal"
        segments[k] = write_video(root / split / label / f"bikes_{k}.mp4", frames[k * SEGMENT : (k + 1) * SEGMENT])
    encoder, ident = i3d_cpu
    settings = ExtractionSettings().with_weights(ident)
    for split in ("train", "test"):
        report = extract_videos(
            [root / split], out_dir=root / "features" / split, settings=settings, encoder=encoder, progress=False
        )
        assert not report.failed
    run_dir = train_calibrated(
        root / "features" / "train",
        out_dir=root / "run",
        config=replace(TrainConfig(), epochs=2),
        calibration=CalibrationSpec(),
    )
    return root, run_dir, settings, encoder


@pytest.mark.slow
def test_a_model_trained_on_real_footage_does_not_mark_its_held_out_segments(bikes_run):
    root, run_dir, settings, encoder = bikes_run
    distance = load_distance(run_dir)
    assert distance.threshold_from == "heldout" and distance.threshold_videos == 2
    run = load_run(run_dir)
    result = detect_videos(
        [root / "test"],
        run,
        cache_dir=root / "features" / "test",
        settings=settings,
        operating_point=OperatingPoint(),
        encoder=encoder,
        progress=False,
    )
    (video,) = result.document.videos
    assert video.ood is not None and not video.ood.outside, video.ood


@pytest.mark.slow
def test_the_same_model_marks_other_footage(bikes_run, tmp_path):
    root, run_dir, settings, encoder = bikes_run
    other = write_video(tmp_path / "square.mp4", moving_frames(48, 160, 120))
    result = detect_videos(
        [other],
        load_run(run_dir),
        cache_dir=tmp_path / "cache",
        settings=settings,
        operating_point=OperatingPoint(),
        encoder=encoder,
        progress=False,
    )
    (video,) = result.document.videos
    assert video.ood.outside and video.ood.share_outside == 1.0
