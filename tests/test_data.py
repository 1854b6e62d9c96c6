"""Feature sets: vadpipe caches, bare XD-Violence folders, labels and annotations.txt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vadpipe.errors import CacheError, DataError
from vadpipe.extract.cache import CacheRecord, write_entry
from vadpipe.model.data import DataWarning, load_item, scan_features
from vadpipe.model.labels import labels_from_annotations, open_training_set, parse_annotations, read_labels_csv

ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xd_violence" / "annotations.txt"


@pytest.fixture(scope="module")
def real_annotations() -> Path:
    if not ANNOTATIONS.is_file():
        pytest.skip(f"the real XD-Violence annotations.txt is not at {ANNOTATIONS} (the read-only ../shared folder)")
    return ANNOTATIONS


def _cache_entry(
    cache: Path,
    stem: str,
    source: str,
    *,
    n_clips: int = 6,
    n_crops: int = 1,
    dim: int = 8,
    settings_key: str = "key1",
    seed: int = 0,
) -> CacheRecord:
    """One cache entry written by the extraction stage's own writer (record format of contracts.md)."""
    rng = np.random.default_rng(seed)
    feats = [rng.random((n_clips, dim), dtype=np.float32) for _ in range(n_crops)]
    record = {
        "schema_version": 1,
        "stem": stem,
        "source": {"path": source, "size": 1, "sha256": "0" * 64},
        "video": {
            "fps": 25.0,
            "n_frames": 16 * n_clips + 3,
            "duration_s": 1.0,
            "width": 64,
            "height": 48,
            "rotation": 0,
        },
        "clips": {
            "length": 16,
            "stride": 16,
            "count": n_clips,
            "start_frames": [16 * i for i in range(n_clips)],
            "start_s": [0.64 * i for i in range(n_clips)],
            "end_s": [0.64 * (i + 1) for i in range(n_clips)],
        },
        "crops": ["center"] if n_crops == 1 else [f"crop{i}" for i in range(n_crops)],
        "extractor": {
            "settings": {"clip_len": 16, "stride": 16},
            "settings_key": settings_key,
            "weights_sha256": "w",
            "vadpipe_version": "0.1.0",
        },
        "status": "ok" if n_clips else "zero_clips",
        "error": None,
    }
    return write_entry(cache, CacheRecord.from_dict(record), feats, np.arange(16 * n_clips + 3) / 25.0)


def test_cache_labels_from_folder_names_and_suffix(tmp_path: Path) -> None:
    cache = tmp_path / "features"
    _cache_entry(cache, "street", "/data/Normal/street.mp4", n_crops=2)
    _cache_entry(cache, "brawl", "/data/anomalous/clips/brawl.mp4", n_crops=2)  # nearest matching folder wins
    _cache_entry(cache, "riot", "/data/abnormal/riot.mp4", n_crops=2)
    _cache_entry(cache, "v=x__#1_label_A", "/dl/v=x__#1_label_A.mp4", n_crops=2)
    _cache_entry(cache, "v=y__#1_label_B4-0-0", "/dl/v=y__#1_label_B4-0-0.mp4", n_crops=2)
    (cache / "notes.json").write_text(json.dumps({"not": "a record"}))  # other JSON files are ignored
    data = open_training_set(cache)
    assert data.kind == "cache" and data.feature_dim == 8 and len(data.items) == 10
    labels = {item.video: (item.label, item.label_source) for item in data.items}
    assert labels == {
        "street": (0, "folder"),
        "brawl": (1, "folder"),
        "riot": (1, "folder"),
        "v=x__#1_label_A": (0, "suffix"),
        "v=y__#1_label_B4-0-0": (1, "suffix"),
    }
    assert data.extraction == {"settings": {"clip_len": 16, "stride": 16}, "settings_key": "key1"}
    assert data.summary()["videos_per_class"] == {"normal": 2, "anomalous": 3}
    only_centre = scan_features(cache, crops=[0])
    assert {item.crop for item in only_centre.items} == {0} and len(only_centre.items) == 5
    item = data.items[0]
    np.testing.assert_array_equal(load_item(item, feature_dim=8), np.load(item.path))


def test_cache_labels_from_csv_by_stem_or_source_name(tmp_path: Path) -> None:
    cache = tmp_path / "features"
    _cache_entry(cache, "a", "/videos/a.mp4")
    _cache_entry(cache, "b", "/videos/b.avi")
    _cache_entry(cache, "b-1234abcd", "/other/b.avi")  # a clashing stem the extractor suffixed
    csv = tmp_path / "labels.csv"
    csv.write_text("video,label\na,normal\nb.avi,anomalous\nb-1234abcd,1\n")
    labels = {i.video: (i.label, i.label_source) for i in open_training_set(cache, labels_csv=csv).items}
    assert labels == {"a": (0, "csv"), "b": (1, "csv"), "b-1234abcd": (1, "csv")}

    csv.write_text("video,label\na,0\nb-1234abcd,1\n")  # the CSV must cover every video
    with pytest.raises(DataError, match=r"no label for 1 video\(s\): b; add them to"):
        open_training_set(cache, labels_csv=csv)
    csv.write_text("video,label\na,0\nb,1\nb.avi,0\nb-1234abcd,1\n")
    with pytest.raises(DataError, match="both labels under different names"):
        open_training_set(cache, labels_csv=csv)


def test_missing_labels_and_single_class_are_clear_errors(tmp_path: Path) -> None:
    cache = tmp_path / "features"
    _cache_entry(cache, "park", "/videos/park.mp4")
    _cache_entry(cache, "road", "/videos/normal/road.mp4")
    with pytest.raises(DataError, match=r"no label for 1 video\(s\): park; give --labels FILE.csv"):
        open_training_set(cache)
    csv = tmp_path / "labels.csv"
    csv.write_text("video,label\npark,0\nroad,normal\n")
    with pytest.raises(DataError, match="all 2 training videos are normal: weakly supervised training needs both"):
        open_training_set(cache, labels_csv=csv)


@pytest.mark.filterwarnings("ignore::vadpipe.model.data.DataWarning")
def test_cache_problems(tmp_path: Path) -> None:
    cache = tmp_path / "features"
    _cache_entry(cache, "x_label_A", "/v/x_label_A.mp4")
    _cache_entry(cache, "y_label_B1", "/v/y_label_B1.mp4")
    _cache_entry(cache, "empty_label_A", "/v/empty_label_A.mp4", n_clips=0)
    with pytest.warns(DataWarning, match=r"skipped 1 feature file\(s\) with 0 clips .*empty_label_A"):
        data = open_training_set(cache)
    assert data.videos == ["x_label_A", "y_label_B1"]
    with pytest.raises(DataError, match=r"crop\(s\) \[1\] not in the cache"):
        scan_features(cache, crops=[0, 1])

    np.save(cache / "y_label_B1__0.npy", np.zeros((6, 8), np.float32))  # altered after extraction
    with pytest.raises(CacheError, match="corrupted"):
        scan_features(cache)
    _cache_entry(cache, "y_label_B1", "/v/y_label_B1.mp4", dim=16)
    with pytest.raises(DataError, match="different widths .*width 8: x_label_A__0.npy; width 16: y_label_B1__0.npy"):
        scan_features(cache)
    _cache_entry(cache, "y_label_B1", "/v/y_label_B1.mp4", settings_key="key2")
    with pytest.raises(DataError, match="mixes 2 extraction settings"):
        scan_features(cache)


@pytest.mark.filterwarnings("ignore::vadpipe.model.data.DataWarning")
def test_bare_features_nan_rows_and_empty_files(tmp_path: Path) -> None:
    folder = tmp_path / "feats"
    folder.mkdir()
    good = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    np.save(folder / "a_label_A__0.npy", good)
    np.save(folder / "b_label_B2-0-0__0.npy", good)
    np.save(folder / "c_label_A__0.npy", np.zeros((0, 4), np.float32))
    np.save(folder / "a_label_A__vggish.npy", np.zeros((3, 128), np.float32))  # audio features: not ours
    with pytest.warns(DataWarning, match=r"skipped 1 feature file\(s\) with 0 clips"):
        data = open_training_set(folder)
    assert data.kind == "xd" and data.extraction is None
    assert [(i.video, i.label) for i in data.items] == [("a_label_A", 0), ("b_label_B2-0-0", 1)]

    bad = good.copy()
    bad[3, 1] = np.inf
    np.save(folder / "b_label_B2-0-0__0.npy", bad)
    with pytest.raises(DataError, match=r"b_label_B2-0-0__0.npy has NaN or inf values in 1 of 5 rows \(first row 3\)"):
        scan_features(folder)
    np.save(folder / "b_label_B2-0-0__0.npy", good)
    np.save(folder / "b_label_B2-0-0__1.npy", good[:4])
    with pytest.raises(DataError, match="same number of rows; they differ for b_label_B2-0-0"):
        scan_features(folder)
    with pytest.raises(DataError, match="does not exist"):
        scan_features(tmp_path / "nowhere")
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no features in"):
        scan_features(tmp_path / "void")


def test_miniature_xd_violence_tree_with_real_names(tmp_path: Path, real_annotations: Path) -> None:
    annotations = parse_annotations(real_annotations)
    violent = [
        "v=cEOM18n8fhU__#1_label_G-0-0",
        "v=u5SF4SlqNDQ__#00-00-00_00-01-00_label_G-0-0",
        "v=U6MC8JJJZSY__#1_label_G-0-0",
    ]  # the last one carries .mp4 in the file
    assert all(name in annotations for name in violent)
    normal = "v=n0rmalV1de0__#1_label_A"  # normal videos are absent from annotations.txt
    train_names = ["Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6", "v=S-7rRLrxnVQ__#1_label_A"]
    rng = np.random.default_rng(0)
    for split, names in (("RGBTest", [*violent, normal]), ("RGB", train_names)):
        (tmp_path / split).mkdir()
        for name in names:
            n_clips = int(rng.integers(5, 30))
            for crop in range(5):
                np.save(tmp_path / split / f"{name}__{crop}.npy", rng.random((n_clips, 16), dtype=np.float32))

    train = open_training_set(tmp_path)  # an XD root: the train split is RGB/
    assert train.root == tmp_path / "RGB" and len(train.items) == 10
    assert {(i.video, i.label) for i in train.items} == {(train_names[0], 1), (train_names[1], 0)}
    assert [i.crop for i in train.items[:5]] == [0, 1, 2, 3, 4]  # every crop is its own sample

    test = labels_from_annotations(scan_features(tmp_path, split="test", crops=[0, 3]), annotations)
    assert len(test.items) == 8 and {i.crop for i in test.items} == {0, 3}
    assert {i.video: i.label for i in test.items} == {**dict.fromkeys(violent, 1), normal: 0}
    with pytest.raises(DataError, match="no features for crops \\[7\\]"):
        scan_features(tmp_path, crops=[7])


def test_parse_the_real_annotations(real_annotations: Path) -> None:
    annotations = parse_annotations(real_annotations)
    assert len(annotations) == 500  # one line per violent test video (model/README.md §8)
    assert sum(len(v) for v in annotations.values()) == 1238
    assert not any(name.endswith(".mp4") for name in annotations)
    assert "v=U6MC8JJJZSY__#1_label_G-0-0" in annotations  # written with .mp4 in the file
    assert sum(e - s for v in annotations.values() for s, e in v) == 538_324  # half-open [s, e)
    assert annotations["v=u5SF4SlqNDQ__#00-00-00_00-01-00_label_G-0-0"] == [(624, 912), (950, 1441)]


def test_annotation_and_csv_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    for text, message in [
        ("v1 10 20 30", r":1: expected '<video> start end"),
        ("v1 10 x", "must be integers"),
        ("v1 20 10", r"0 <= start < end, got \[\(20, 10\)\]"),
        ("v1 1 2\nv1.mp4 3 4", ":2: 'v1' is annotated twice"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            parse_annotations(path)
    path.write_text("v1.mp4 0 16\n\nv2 5 6 8 9\n")
    assert parse_annotations(path) == {"v1": [(0, 16)], "v2": [(5, 6), (8, 9)]}

    csv = tmp_path / "labels.csv"
    csv.write_text("\ufeffVideo,Label\na,Normal\nb,ANOMALOUS\nc,0\n")
    assert read_labels_csv(csv) == {"a": 0, "b": 1, "c": 0}
    for text, message in [
        ("name,y\na,0\n", "header 'video,label'"),
        ("video,label\na,maybe\n", ":2: label must be"),
        ("video,label\na,0\na,1\n", "labelled both normal and anomalous"),
        ("video,label\n", "holds no labels"),
    ]:
        csv.write_text(text)
        with pytest.raises(DataError, match=message):
            read_labels_csv(csv)
