"""A labelled dataset on disk: splits of rendered videos, labels, annotations and a manifest
that marks it complete; regenerating replaces it, foreign folders are refused."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import warnings
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from vadpipe._version import __version__
from vadpipe.errors import ConfigError, DataError
from vadpipe.extract.fileio import atomic_write_text, remove_stale_temps
from vadpipe.synth.anomalies import sample_anomaly
from vadpipe.synth.config import DEMO_SPLITS, SplitSize, SynthConfig
from vadpipe.synth.encoding import available_codec
from vadpipe.synth.video import VideoTruth, render_video

__all__ = ["MANIFEST_SCHEMA_VERSION", "SynthDataset", "load_dataset", "make_dataset"]

MANIFEST_SCHEMA_VERSION = 1

_GENERATOR = "vadpipe.synth"


@dataclass(frozen=True)
class SynthDataset:
    """A generated dataset on disk: ``root/<split>/{normal,anomalous}/<stem>.mp4`` plus metadata files."""

    root: Path
    config: SynthConfig
    seed: int
    splits: Mapping[str, SplitSize]
    videos: tuple[VideoTruth, ...] = field(repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def annotations_path(self) -> Path:
        """XD-Violence style ``<stem> s1 e1`` lines (half-open frame intervals), anomalous videos only."""
        return self.root / "annotations.txt"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.csv"

    def split(self, name: str) -> tuple[VideoTruth, ...]:
        """The videos of one split, in manifest order."""
        if name not in self.splits:
            raise DataError(f"no split {name!r} in {self.root} (it has {sorted(self.splits)})")
        return tuple(v for v in self.videos if v.split == name)

    def split_dir(self, name: str) -> Path:
        """The folder whose ``normal/`` and ``anomalous/`` subfolders give ``vadpipe train`` its labels."""
        self.split(name)
        return self.root / name


def make_dataset(
    out_dir: str | os.PathLike,
    *,
    splits: Mapping[str, SplitSize] = DEMO_SPLITS,
    config: SynthConfig = SynthConfig(),
    seed: int = 0,
    workers: int | None = None,
    on_video: Callable[[VideoTruth], None] | None = None,
) -> SynthDataset:
    """Generate a labelled dataset under ``out_dir`` and return its manifest.

    Layout: ``<split>/normal/<stem>.mp4`` and ``<split>/anomalous/<stem>.mp4`` (the folder names are
    the labels ``vadpipe train`` reads), ``annotations.txt`` (XD-Violence format: ``<stem> s e``,
    half-open frame interval, one line per anomalous video of every split), ``labels.csv``
    (``video,label``) and ``manifest.json`` (``"complete": true`` once every file is written).
    Stems are unique across splits and carry XD-Violence's label tag (``_label_A`` = normal).

    Each video's content depends only on ``seed``, its split name and its index, so changing the
    number of videos in one split leaves the others unchanged. ``out_dir`` must be empty, missing,
    or a dataset made by this function (its files are replaced).

    Args:
        out_dir: dataset folder.
        splits: split name -> :class:`SplitSize`; names become folders.
        config: look of the videos.
        seed: the dataset seed.
        workers: rendering processes; default: one per available CPU. The output does not depend on it.
        on_video: called in this process after each video is written (for progress bars).

    Raises:
        DataError: ``out_dir`` holds files that are not a vadpipe synthetic dataset.
    """
    root = Path(out_dir).absolute()
    if not splits:
        raise ConfigError("splits must name at least one split, e.g. {'train': SplitSize(normal=4, anomalous=4)}")
    for name in splits:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(f"split names must be plain folder names, got {name!r}")
    splits = {name: splits[name] for name in splits}
    _prepare_out_dir(root)
    codec = available_codec(config.codec)

    fixed = replace(config, codec=codec)  # every video of the set with the same encoder
    jobs: list[dict] = []
    for split_name, size in splits.items():
        split_key = zlib.crc32(split_name.encode())
        kind_offset = int(np.random.default_rng([seed, split_key, 2]).integers(len(config.anomaly_kinds)))
        for index in range(size.normal + size.anomalous):
            anomalous = index >= size.normal
            rng = np.random.default_rng([seed, split_key, 1, index])
            n_frames = int(rng.integers(config.n_frames[0], config.n_frames[1] + 1))
            anomaly = None
            if anomalous:
                # Cycle through the kinds so that small sets still show each of them.
                kind = config.anomaly_kinds[(kind_offset + index - size.normal) % len(config.anomaly_kinds)]
                anomaly = sample_anomaly(n_frames, config=config, rng=rng, kind=kind)
            stem = f"synth_{split_name}_{index:03d}_label_{anomaly.kind if anomaly else 'A'}"
            label_dir = root / split_name / ("anomalous" if anomalous else "normal")
            label_dir.mkdir(parents=True, exist_ok=True)
            jobs.append(
                dict(
                    path=label_dir / f"{stem}.mp4",
                    n_frames=n_frames,
                    anomaly=anomaly,
                    config=fixed,
                    seed=int(rng.integers(2**63)),
                    split=split_name,
                )
            )

    planned = [
        {"stem": j["path"].stem, "path": j["path"].relative_to(root).as_posix(), "split": j["split"]} for j in jobs
    ]
    _write_manifest(root, config=config, seed=seed, splits=splits, videos=planned, complete=False)

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    workers = min(workers, len(jobs))
    videos: list[VideoTruth | None] = [None] * len(jobs)

    def finished(i: int, truth: VideoTruth) -> None:
        videos[i] = truth
        if on_video is not None:
            on_video(truth)

    if workers > 1:
        try:
            _render_in_processes(jobs, workers, finished)
        except BrokenProcessPool as exc:
            warnings.warn(
                f"rendering processes failed ({exc}); rendering the rest in this process. A script that calls "
                "make_dataset with workers > 1 needs an `if __name__ == '__main__':` guard",
                RuntimeWarning,
                stacklevel=2,
            )
    for i, job in enumerate(jobs):
        if videos[i] is None:
            finished(i, render_video(**job))
    for label_dir in {job["path"].parent for job in jobs}:  # temp files of workers that died
        remove_stale_temps(label_dir)

    dataset = SynthDataset(root=root, config=config, seed=seed, splits=splits, videos=tuple(videos))
    _write_metadata(dataset)
    return dataset


def _render_job(job: dict) -> VideoTruth:
    return render_video(**job)


def _render_in_processes(jobs: list[dict], workers: int, finished: Callable[[int, VideoTruth], None]) -> None:
    # "spawn": the caller may hold threads (torch, a progress bar) that fork would copy mid-flight.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_render_job, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                finished(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def load_dataset(root: str | os.PathLike) -> SynthDataset:
    """Read a dataset written by :func:`make_dataset` back from its ``manifest.json``.

    Raises:
        DataError: no manifest, a foreign or newer manifest, or listed videos that are missing.
    """
    root = Path(root).absolute()
    manifest = _read_manifest(root)
    if manifest is None:
        raise DataError(
            f"{root} is not a vadpipe synthetic dataset (no {root / 'manifest.json'}); make one with make_dataset"
        )
    if not manifest.get("complete"):
        raise DataError(
            f"the synthetic dataset in {root} is incomplete (its generation was interrupted); make it again"
        )
    videos = tuple(VideoTruth.from_dict(v, root=root) for v in manifest["videos"])
    missing = [str(v.path) for v in videos if not v.path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} videos listed in {root / 'manifest.json'} are missing, e.g. {missing[0]}")
    splits = {name: SplitSize(**s) for name, s in manifest["splits"].items()}
    return SynthDataset(
        root=root,
        config=SynthConfig.from_dict(manifest["config"]),
        seed=int(manifest["seed"]),
        splits=splits,
        videos=videos,
    )


def _write_manifest(
    root: Path, *, config: SynthConfig, seed: int, splits: Mapping[str, SplitSize], videos: list[dict], complete: bool
) -> None:
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "generator": _GENERATOR,
        "vadpipe_version": __version__,
        "complete": complete,  # false while generating: the videos are then only planned
        "seed": seed,
        "config": config.to_dict(),
        "splits": {name: asdict(size) for name, size in splits.items()},
        "annotations": "annotations.txt",
        "labels": "labels.csv",
        "videos": videos,
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def _write_metadata(dataset: SynthDataset) -> None:
    """annotations.txt and labels.csv, then the complete manifest."""
    ordered = sorted(dataset.videos, key=lambda v: v.stem)
    annotations = "".join(
        f"{v.stem} " + " ".join(f"{s} {e}" for s, e in v.intervals) + "\n" for v in ordered if v.label == 1
    )
    atomic_write_text(dataset.annotations_path, annotations)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "label"])
    writer.writerows([v.stem, v.label] for v in ordered)
    atomic_write_text(dataset.labels_path, buf.getvalue())
    _write_manifest(
        dataset.root,
        config=dataset.config,
        seed=dataset.seed,
        splits=dataset.splits,
        videos=[v.to_dict(root=dataset.root) for v in dataset.videos],
        complete=True,
    )


def _read_manifest(root: Path) -> dict | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("generator") != _GENERATOR:
        raise DataError(f"{path} was not written by {_GENERATOR}; refusing to use or overwrite {root}")
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise DataError(
            f"{path} has schema_version {manifest.get('schema_version')!r}; "
            f"this vadpipe reads {MANIFEST_SCHEMA_VERSION}"
        )
    return manifest


def _prepare_out_dir(root: Path) -> None:
    """Refuse a folder with foreign content; clear a previous (maybe interrupted) synthetic dataset
    so that no stale video survives. Its manifest stays until the new one replaces it, so an
    interrupted clean-up can be rerun."""
    if not root.exists():
        root.mkdir(parents=True)
        return
    if not root.is_dir():
        raise DataError(f"{root} exists and is not a folder")
    manifest = _read_manifest(root)
    if manifest is None:
        if any(root.iterdir()):
            raise DataError(
                f"{root} is not empty and holds no vadpipe synthetic dataset; choose an empty or new folder"
            )
        return
    ours = {(root / v["path"]).resolve() for v in manifest["videos"]}
    stale: list[Path] = []
    for name in manifest["splits"]:
        for label_dir in (root / name / "normal", root / name / "anomalous"):
            for p in sorted(label_dir.iterdir()) if label_dir.is_dir() else ():
                if p.resolve() in ours or _is_temp(p):
                    stale.append(p)
                else:
                    raise DataError(
                        f"{p} is not part of the synthetic dataset in {root}; remove it or choose another folder"
                    )
    for p in stale:
        p.unlink(missing_ok=True)
    for name in ("annotations.txt", "labels.csv"):
        (root / name).unlink(missing_ok=True)
    for name in manifest["splits"]:
        for d in (root / name / "normal", root / name / "anomalous", root / name):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _is_temp(path: Path) -> bool:
    """A temp file an interrupted atomic write left: hidden, with a ``.tmp`` part in its name
    (``extract.fileio``'s ``.<name>.<pid>.<random>.tmp``; before it, ``.<stem>.<8 hex>.tmp<suffix>``)."""
    return path.name.startswith(".") and ".tmp" in path.suffixes
