"""The development benchmark sets of bench/quality.py: generated (once) and I3D-extracted (cached).

Three sets, each with ``train`` and ``test`` feature folders and annotation files:

- ``long``: bench/long_videos.py's set (40 training, 20 test videos of 300-600 frames, one
  anomalous stretch of 5-10 % in half of them), data seed 1.
- ``short``: 40 training and 20 test videos of 80-250 frames (5-15 I3D clips), anomaly 25-50 %.
- ``real``: time-edited real footage (bench/real_footage.py): train and test cut from disjoint
  views of the same camera.

Extraction uses the OpenVINO runtime (fp32) when it is installed: its features agree with
torch's to float rounding (cosine ~1) and it is about 1.8x faster on a CPU.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from vadpipe.errors import DataError
from vadpipe.extract.encoder import load_encoder
from vadpipe.extract.engines import extract_videos
from vadpipe.extract.settings import ExtractionSettings
from vadpipe.synth import SplitSize, SynthConfig, load_dataset, make_dataset

SYNTH_SETS = {
    "long": (
        {"train": SplitSize(normal=20, anomalous=20), "test": SplitSize(normal=10, anomalous=10)},
        SynthConfig(n_frames=(300, 600), anomaly_fraction=(0.05, 0.10)),
        1,
    ),
    "short": (
        {"train": SplitSize(normal=20, anomalous=20), "test": SplitSize(normal=10, anomalous=10)},
        SynthConfig(n_frames=(80, 250), anomaly_fraction=(0.25, 0.50)),
        11,
    ),
}


@dataclass(frozen=True)
class BenchSet:
    name: str
    train: Path
    test: Path
    train_annotations: Path
    test_annotations: Path


def extraction_settings() -> ExtractionSettings:
    try:
        import openvino  # noqa: F401

        return ExtractionSettings(runtime="openvino")
    except ImportError:
        return ExtractionSettings()


def _synth(root: Path, name: str):
    splits, config, seed = SYNTH_SETS[name]
    try:
        existing = load_dataset(root)
        if (
            existing.config == replace(config, codec=existing.config.codec)
            and existing.seed == seed
            and dict(existing.splits) == splits
        ):
            return existing
    except DataError:
        pass
    if root.exists():
        shutil.rmtree(root)
    return make_dataset(root, splits=splits, config=config, seed=seed)


def _split_annotations(path: Path, annotations: Path, stems: set[str]) -> Path:
    lines = [line for line in annotations.read_text().splitlines() if line.split(" ", 1)[0] in stems]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def build(root: Path, name: str, *, encoder=None, settings: ExtractionSettings | None = None) -> BenchSet:
    """Generate set ``name`` under ``root/name`` (reused when complete) and extract its features."""
    base = root / name
    base.mkdir(parents=True, exist_ok=True)
    if name in SYNTH_SETS:
        ds = _synth(base / "videos", name)
        dirs = {split: ds.split_dir(split) for split in ("train", "test")}
        anns = {
            split: _split_annotations(
                base / f"{split}_annotations.txt", ds.annotations_path, {v.stem for v in ds.split(split)}
            )
            for split in ("train", "test")
        }
    elif name == "real":
        from real_footage import build_real_set  # bench/real_footage.py

        dirs, anns = build_real_set(base / "videos")
    else:
        raise SystemExit(f"unknown benchmark set {name!r}")
    if encoder is None:
        encoder, settings = load_encoder(settings or extraction_settings())
    feats = {}
    for split in ("train", "test"):
        feats[split] = base / "features" / split
        report = extract_videos(
            [dirs[split]], out_dir=feats[split], settings=settings, encoder=encoder, progress=sys.stderr.isatty()
        )
        if report.failed:
            raise SystemExit(f"{name}: extraction failed for {len(report.failed)} video(s): {report.failed[0].error}")
    return BenchSet(name, feats["train"], feats["test"], anns["train"], anns["test"])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="build and extract the quality benchmark sets")
    parser.add_argument("--dir", type=Path, default=Path("bench-quality"))
    parser.add_argument("sets", nargs="*", default=["long", "short", "real"])
    args = parser.parse_args(argv)
    encoder, settings = load_encoder(extraction_settings())
    for name in args.sets:
        print(f"building {name}", flush=True)
        s = build(args.dir.absolute(), name, encoder=encoder, settings=settings)
        print(f"done {name}: {s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
