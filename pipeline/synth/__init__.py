"""vadpipe's own synthetic surveillance videos: a labelled dataset with known anomalous stretches.

Why it exists: ``vadpipe demo`` and the benchmarks need videos whose anomalies are known to the
frame, that a fresh machine can make in seconds without downloading a dataset, and that a
Kinetics-400 I3D can tell apart. Each video is a static, textured plaza seen by a fixed camera
(perspective paving, a building facade, planters and lamp posts, mild sensor noise and light
drift) with several people-like figures (head, torso, arms, legs; varied clothes) walking
between random waypoints, sometimes pausing. An anomalous video contains one stretch
``[start_frame, end_frame)`` where something abnormal happens, and is normal elsewhere:

- ``run``: several figures sprint erratically (4-6x walking speed, zig-zagging);
- ``fall``: a figure falls to the ground, thrashes, gets up; bystanders rush to it;
- ``fight``: two or three figures meet and grapple violently (lunges, flailing arms, kicks);
- ``scatter``: every figure flees from a point in panic, arms raised.

The anomalies are big, fast and erratic on purpose: the detector only sees I3D features averaged
over 16-frame clips, and subtle changes would not survive that. All figures stay inside the
region that I3D's default centre crop sees (short side resized to 256 px, centre 224 px).

Rendering is vectorised numpy (every body part is a soft-edged capsule; the pixel maths for all
parts of a frame runs at once on small patches around them). Frames stream one at a time into a
real H.264 (``libx264``, else MPEG-4 part 2) yuv420p encoder, so memory does not grow with video
length. Everything is determined by the seed: the same seed
gives byte-identical frames.

Modules, each with one job: ``config`` (what to generate), ``scene`` (the plaza), ``figures``
(how people look), ``anomalies`` (when an anomaly happens and what each kind does), ``motion``
(walking, and the anomaly plans taking over), ``drawing`` (figures onto a frame), ``encoding``
(frames into a file, atomically), ``video`` (one video and its ground truth) and ``dataset``
(labelled splits, manifest, regeneration).

Example:
    >>> from vadpipe.synth import SplitSize, SynthConfig, make_dataset
    >>> ds = make_dataset("demo-data", splits={"train": SplitSize(2, 2)},
    ...                   config=SynthConfig(n_frames=64), seed=0)  # doctest: +SKIP
    >>> [v.stem for v in ds.videos if v.label == 1]  # doctest: +SKIP
    ['synth_train_002_label_fight', 'synth_train_003_label_scatter']
"""

from vadpipe.synth.anomalies import sample_anomaly
from vadpipe.synth.config import ANOMALY_KINDS, DEMO_SPLITS, Anomaly, SplitSize, SynthConfig
from vadpipe.synth.dataset import MANIFEST_SCHEMA_VERSION, SynthDataset, load_dataset, make_dataset
from vadpipe.synth.encoding import available_codec
from vadpipe.synth.video import VideoTruth, render_frames, render_video

__all__ = [
    "ANOMALY_KINDS",
    "DEMO_SPLITS",
    "MANIFEST_SCHEMA_VERSION",
    "Anomaly",
    "SplitSize",
    "SynthConfig",
    "SynthDataset",
    "VideoTruth",
    "available_codec",
    "load_dataset",
    "make_dataset",
    "render_frames",
    "render_video",
    "sample_anomaly",
]
