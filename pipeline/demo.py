"""``vadpipe demo``: the whole pipeline on generated videos, with the real I3D, in minutes on a CPU.

generate (synthetic plaza, labelled per video) -> extract (train and held-out test) -> train
(a quarter of the training videos held out to choose the operating point, see
`vadpipe.calibrated_training`) -> evaluate (standard protocol, and the decisions at the operating
point) -> detect on the test videos (intervals.json, plots).
Everything lands in one folder (default ``<workspace>/demo``) and never touches the user's own
features or runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vadpipe.calibrated_training import train_calibrated
from vadpipe.detect import DetectResult, detect_videos, detection_document, plot_video
from vadpipe.executor_choice import choose_executor
from vadpipe.extract.encoder import load_encoder
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.fileio import atomic_write_text
from vadpipe.extract.results import ExtractReport
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.model.config import TrainConfig
from vadpipe.model.labels import parse_annotations
from vadpipe.model.run import load_run, set_latest
from vadpipe.postprocess.evaluate import evaluate_run
from vadpipe.postprocess.intervals import OperatingPoint, write_intervals
from vadpipe.recipes import RECIPES
from vadpipe.run_calibration import CalibrationSpec
from vadpipe.synth import DEMO_SPLITS, SplitSize, SynthConfig, SynthDataset, make_dataset

__all__ = ["DemoConfig", "DemoReport", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Size and recipe of the demo; the defaults finish in under 10 minutes on 2 CPU cores."""

    seed: int = 0
    splits: dict[str, SplitSize] = field(default_factory=lambda: dict(DEMO_SPLITS))
    synth: SynthConfig = SynthConfig()
    training: TrainConfig = RECIPES["default"].training
    calibration: CalibrationSpec | None = RECIPES["default"].calibration  # None: train on all, the paper's 0.35
    ensemble: int = RECIPES["default"].ensemble  # members (cross-fitted when calibrating)
    threshold: float | None = None  # None: the run's operating point; a number: that curve threshold, no gate


@dataclass
class DemoReport:
    root: Path
    dataset: SynthDataset
    extract: dict[str, ExtractReport]
    run_dir: Path
    metrics: dict
    detection: DetectResult
    intervals_path: Path
    plots: list[Path]


Say = Callable[[str], None]


def run_demo(
    out_dir: Path,
    *,
    config: DemoConfig = DemoConfig(),
    device: str | None = None,
    progress: bool = True,
    say: Say = print,
) -> DemoReport:
    """Run generate -> extract -> train -> evaluate -> detect in ``out_dir`` (replaced if it exists)."""
    root = Path(out_dir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)

    say(f"[1/5] generating {sum(s.normal + s.anomalous for s in config.splits.values())} synthetic videos")
    dataset = make_dataset(root / "videos", splits=config.splits, config=config.synth, seed=config.seed)

    say("[2/5] extracting I3D features (Kinetics-400 weights, centre crop, 16-frame clips)")
    encoder, settings = load_encoder(ExtractionSettings(), device=device)
    features = {name: root / "features" / name for name in config.splits}
    executor = choose_executor(device=device)  # the executor `vadpipe extract` would choose
    reports = {
        name: extract_videos(
            [dataset.split_dir(name)],
            out_dir=features[name],
            settings=settings,
            executor=executor,
            encoder=encoder,
            progress=progress,
        )
        for name in config.splits
    }

    if config.calibration is None:
        held = "" if config.ensemble == 1 else f", {config.ensemble} members"
    elif config.ensemble > 1:
        held = (
            f", {config.ensemble} members cross-fitted on {config.ensemble} folds: each holds one out, "
            "every video helps choose the operating point"
        )
    else:
        held = f", {config.calibration.holdout_fraction:.0%} of the videos held out to choose the operating point"
    length = f"{config.training.epochs} epochs"
    if config.training.min_steps:
        length += f" or {config.training.min_steps} optimizer steps, whichever is more"
    say(f"[3/5] training ({length}{held})")
    runs = root / "runs"
    run_dir = train_calibrated(
        features["train"],
        out_dir=runs / "demo",
        config=config.training,
        calibration=config.calibration,
        show_progress=progress,
        ensemble=config.ensemble,
    )
    set_latest(runs, run_dir)

    say("[4/5] evaluating on the test videos (standard protocol, and the decisions at the operating point)")
    test_stems = {v.stem for v in dataset.split("test")}
    test_annotations = root / "test_annotations.txt"
    atomic_write_text(
        test_annotations,
        "".join(
            line + "\n"
            for line in dataset.annotations_path.read_text().splitlines()
            if line.split(" ", 1)[0] in test_stems
        ),
    )
    metrics = evaluate_run(run_dir, features["test"], test_annotations, protocol="standard", threshold=config.threshold)

    say("[5/5] detecting anomalous intervals in the test videos")
    run = load_run(run_dir)
    op = OperatingPoint.for_run(run.config.operating_point, where=f"{run_dir}/config.json", threshold=config.threshold)
    detection = detect_videos(
        [dataset.split_dir("test")],
        run,
        cache_dir=features["test"],
        settings=settings,
        operating_point=op,
        encoder=encoder,
        progress=progress,
    )
    intervals_path = write_intervals(root / "intervals.json", detection_document(detection, model=run.path))
    truth = parse_annotations(test_annotations)
    plots = []
    for video in detection.document.videos:
        entry = detection.entries[video.source]
        plots.append(
            plot_video(
                root / "plots" / f"{entry.record.stem}.png",
                video,
                entry,
                threshold=op.threshold,
                low=op.low,
                high=op.high,
                ground_truth_frames=truth.get(Path(video.source).stem, []),
            )
        )
    return DemoReport(
        root=root,
        dataset=dataset,
        extract=reports,
        run_dir=run_dir,
        metrics=metrics,
        detection=detection,
        intervals_path=intervals_path,
        plots=plots,
    )
