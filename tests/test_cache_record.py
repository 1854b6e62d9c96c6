"""The cache record contract: one validating reader, a byte-identical writer (no network run here)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from vadpipe.errors import CacheError
from vadpipe.extract import cache
from vadpipe.extract.cache import CacheRecord
from vadpipe.extract.claims import StemAssigner


def _head(n_clips: int = 3) -> dict:
    starts = [16 * i for i in range(n_clips)]
    return {
        "schema_version": 1,
        "stem": "walk",
        "source": {"path": "/videos/walk.mp4", "size": 1234, "sha256": "a" * 64},
        "video": {
            "fps": 25.0,
            "native_fps": 25.0,
            "n_frames": 16 * n_clips + 2,
            "duration_s": 2.0,
            "width": 320,
            "height": 240,
            "rotation": 0,
            "codec": "h264",
        },
        "clips": {
            "length": 16,
            "stride": 16,
            "count": n_clips,
            "start_frames": starts,
            "start_s": [s / 25 for s in starts],
            "end_s": [(s + 16) / 25 for s in starts],
        },
        "crops": ["center"],
        "extractor": {
            "settings": {"clip_len": 16, "crops": "center"},
            "settings_key": "0123456789abcdef",
            "weights_sha256": "b" * 64,
            "vadpipe_version": "0.1.0",
        },
        "status": "ok",
        "error": None,
    }


def _write(tmp_path: Path, head: dict) -> CacheRecord:
    n = head["clips"]["count"]
    feats = [np.arange(n * 4, dtype=np.float32).reshape(n, 4)]
    return cache.write_entry(tmp_path, CacheRecord.from_dict(head), feats, np.arange(head["video"]["n_frames"]) / 25)


def test_written_record_reads_back_equal_and_round_trips_to_the_same_bytes(tmp_path: Path) -> None:
    written = _write(tmp_path, _head())
    on_disk = (tmp_path / "walk.json").read_bytes()
    back = cache.read_record(tmp_path / "walk.json")
    assert back == written and back.intact
    assert json.dumps(back.to_dict(), indent=1).encode() == on_disk
    assert list(json.loads(on_disk)) == [
        "schema_version",
        "stem",
        "source",
        "video",
        "clips",
        "crops",
        "extractor",
        "status",
        "error",
        "features",
        "frame_times_file",
        "record_sha256",
    ]
    assert back.features[0].shape == (3, 4) and back.clip_frames[1, 0] == 16 and back.clip_frames.shape == (3, 16)
    assert cache.entry_problem(tmp_path, back, source_sha256="a" * 64, settings_key="0123456789abcdef") is None
    assert cache.reusable_entry(tmp_path, "walk", source_sha256="c" * 64, settings_key="0123456789abcdef") is None
    entry = cache.reusable_entry(tmp_path, "walk", source_sha256="a" * 64, settings_key="0123456789abcdef")
    assert entry.record == written and entry.frame_times.shape == (written.video.n_frames,)  # as verified
    again = pickle.loads(pickle.dumps(entry))  # results carry entries across processes
    assert again.record.to_dict() == written.to_dict() and again.record.intact
    np.testing.assert_array_equal(again.frame_times, entry.frame_times)
    assert list(cache.iter_records(tmp_path)) == [written]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["clips"].pop("count"), "'clips.count' is missing"),
        (lambda d: d["video"].update(width="320"), "'video.width' must be an integer"),
        (lambda d: d["clips"]["start_frames"].append(48), "'clips.start_frames' lists 4 values for clips.count = 3"),
        (lambda d: d.update(status="done"), "'status' must be one of ok, partial, zero_clips"),
        (lambda d: d["source"].update(extra=1), "unknown field 'source.extra'"),
        (lambda d: d.update(crops="center"), "'crops' must be a list"),
        (lambda d: d["video"].update(fps=float("nan")), "'video.fps' must be a finite number"),
        (lambda d: d["clips"]["start_s"].__setitem__(1, None), r"'clips.start_s\[1\]' must be a finite number"),
        (lambda d: d.update(extractor=[]), "'extractor' must be an object"),
    ],
)
def test_from_dict_names_the_bad_field(edit, message) -> None:
    data = copy.deepcopy(_head())
    edit(data)
    with pytest.raises(CacheError, match=message):
        CacheRecord.from_dict(data)


def test_damaged_record_raises_for_readers_and_is_recomputed_by_the_extractor(tmp_path: Path) -> None:
    _write(tmp_path, _head())
    (tmp_path / "notes.json").write_text(json.dumps({"not": "a record"}))
    assert cache.read_record(tmp_path / "notes.json") is None  # other JSON is not a record
    data = json.loads((tmp_path / "walk.json").read_text())
    data["clips"]["count"] = "3"
    (tmp_path / "walk.json").write_text(json.dumps(data))
    with pytest.raises(CacheError, match=r"walk.json: field 'clips.count' must be an integer"):
        list(cache.iter_records(tmp_path))
    assert cache.reusable_entry(tmp_path, "walk", source_sha256="a" * 64, settings_key="0123456789abcdef") is None
    assert StemAssigner(tmp_path).assign(Path("/elsewhere/walk.mp4"), "d" * 64) == "walk"


@pytest.mark.parametrize("after_record", [False, True])
def test_an_interrupted_write_leaves_no_half_entry(tmp_path: Path, monkeypatch, after_record: bool) -> None:
    """Ctrl-C (or a Ray task cancelled by its interrupted driver) while an entry is written: before
    the record is in place, the feature and frame-time files already renamed are removed; just
    after, the entry is kept, complete. The interrupt goes on either way."""
    real = cache.atomic_write_text

    def interrupted(path, text):
        if after_record:
            real(path, text)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "atomic_write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, _head())
    names = sorted(p.name for p in tmp_path.iterdir())
    if after_record:
        assert names == ["walk.json", "walk.times.npy", "walk__0.npy"]
        rec = cache.read_record(tmp_path / "walk.json")
        assert cache.entry_problem(tmp_path, rec, source_sha256="a" * 64, settings_key="0123456789abcdef") is None
    else:
        assert names == []
