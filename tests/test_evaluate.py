"""Evaluating a model over feature folders (bare XD-Violence and vadpipe cache), and the CLI."""

from __future__ import annotations

import json
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from vadpipe.errors import ConfigError, DataError
from vadpipe.extract.cache import CacheRecord, write_entry
from vadpipe.model.data import DataWarning, scan_features
from vadpipe.model.scoring import csl_rows
from vadpipe.postprocess.evaluate import (
    check_features_match_run,
    evaluate_model,
    group_videos,
    json_ready,
)
from vadpipe.postprocess.metrics import LEVELS

# Real names and intervals from XD-Violence annotations.txt, plus two normal videos.
ANOMALOUS = {
    "v=u5SF4SlqNDQ__#00-00-00_00-01-00_label_G-0-0": ([(624, 912), (950, 1441)], 100),
    "v=S-7rRLrxnVQ__#1_label_B4-0-0": ([(0, 1517), (1970, 3038)], 200),
}
NORMAL = {
    "Black.Hawk.Down.2001__#01-24-09_01-24-50_label_A": 40,
    "A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A": 7,  # T = 7: csl keeps rows 0 and 3
}
ANNOTATIONS = {name: intervals for name, (intervals, _) in ANOMALOUS.items()}


class _Output(NamedTuple):
    attention: torch.Tensor
    video_score: torch.Tensor
    tcam: torch.Tensor


class _OracleModel(nn.Module):
    """Reads the anomaly off feature column 0 (+4 anomalous, -4 normal): a model that is right
    about every clip, so any misalignment in the evaluation shows as a metric below 1."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> _Output:
        mask = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
        p = torch.sigmoid(x[..., 0])
        attention = p * mask
        return _Output(attention, (attention.amax(dim=1)), p)


def _oracle_features(n_clips: int, intervals, *, dim: int = 4, seed: int = 0, start: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.1, size=(n_clips, dim)).astype(np.float32)
    for k in range(n_clips):
        frames = range(start + 16 * k, start + 16 * k + 16)
        anomalous = any(s <= f < e for f in frames for s, e in intervals)
        x[k, 0] += 4.0 if anomalous else -4.0
    return x


def _write_bare(folder, n_crops: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    videos = {**{n: (iv, t) for n, (iv, t) in ANOMALOUS.items()}, **{n: ([], t) for n, t in NORMAL.items()}}
    for i, (name, (intervals, n_clips)) in enumerate(videos.items()):
        for c in range(n_crops):
            np.save(folder / f"{name}__{c}.npy", _oracle_features(n_clips, intervals, seed=10 * i + c))
    np.save(folder / f"{next(iter(NORMAL))}__vggish.npy", np.zeros((40, 128), np.float32))


def test_group_bare_xd_folder(tmp_path) -> None:
    _write_bare(tmp_path / "xd" / "RGBTest")
    (tmp_path / "xd" / "RGB").mkdir()
    videos = group_videos(scan_features(tmp_path / "xd", split="test"))
    assert [v.name for v in videos] == sorted([*ANOMALOUS, *NORMAL])
    assert all(len(v.crops) == 2 and v.clip_len == 16 for v in videos)
    assert [item.crop for item in videos[0].crops] == [0, 1]
    u5 = next(v for v in videos if v.name.startswith("v=u5SF"))
    np.testing.assert_array_equal(u5.start_frames, 16 * np.arange(100))


@pytest.mark.parametrize("protocol", ["standard", "csl"])
def test_oracle_model_scores_perfectly_on_xd_layout(tmp_path, protocol) -> None:
    _write_bare(tmp_path / "RGBTest")
    features = scan_features(tmp_path, split="test")
    videos = group_videos(features)
    calls = []
    report = evaluate_model(
        _OracleModel(),
        features,
        ANNOTATIONS,
        protocol=protocol,
        progress=lambda done, total, stem: calls.append((done, total)),
    )
    assert calls[-1] == (4, 4)
    lengths = [t for _, t in ANOMALOUS.values()] + list(NORMAL.values())
    n_crops = 2
    if protocol == "standard":
        # one pair per video, every clip, every frame of the 16 T horizon
        assert report["video"]["n"] == 4
        assert report["segment"]["n"] == sum(lengths)
        assert report["frame"]["n"] == 16 * sum(lengths)
        for level in ("video", "segment"):
            assert report[level]["auc"] == pytest.approx(1.0)
            assert report[level]["ap"] == pytest.approx(1.0)
        # frame: XDVioDet's computation done independently from the files: gt = zeros(16 T)
        # with [s, e) set, scores = crop-mean weighted T-CAM repeated x16, concatenated.
        gt, pred = [], []
        for v in videos:
            psi = np.mean(
                [1 / (1 + np.exp(-np.load(item.path)[:, 0].astype(np.float64))) ** 2 for item in v.crops], axis=0
            )
            g = np.zeros(16 * len(psi))
            for s, e in ANNOTATIONS.get(v.name, []):
                g[s:e] = 1
            gt.append(g)
            pred.append(np.repeat(psi, 16))
        expected = roc_auc_score(np.concatenate(gt), np.concatenate(pred))
        assert 0.99 < expected < 1  # partly anomalous clips score all their frames high
        assert report["frame"]["auc"] == pytest.approx(expected, abs=1e-6)
    else:
        # one pair per crop, only the subsampled clips (all 7 rows of the short video)
        kept = sum(len(csl_rows(t)) for t in lengths)
        assert report["video"]["n"] == 4 * n_crops
        assert report["segment"]["n"] == n_crops * kept
        assert report["frame"]["n"] == n_crops * 16 * kept
        assert report["video"]["auc"] == pytest.approx(1.0)
        assert report["segment"]["auc"] == pytest.approx(1.0)
        # the spline blurs the compressed timeline at label changes, nothing more
        assert report["frame"]["auc"] > 0.95
    # positives: every annotated frame (all lie inside the 16 T horizons here)
    horizon_pos = (912 - 624) + (1441 - 950) + 1517 + (3038 - 1970)
    if protocol == "standard":
        assert report["frame"]["n_positive"] == horizon_pos
    assert report["proposal"]["auc"] > 0.95
    assert report["counts"] == {"videos": 4, "anomalous_videos": 2, "entries": 4 if protocol == "standard" else 8}
    assert set(report["definitions"]) == {*LEVELS, "ap", "ap_trapezoid"}
    json.dumps(json_ready(report), allow_nan=False)


def test_evaluation_warnings(tmp_path) -> None:
    _write_bare(tmp_path, n_crops=1)
    features = scan_features(tmp_path, split="test")
    annotations = {**ANNOTATIONS, "v=missing__#1_label_B1-0-0": [(0, 16)]}
    annotations.pop("v=S-7rRLrxnVQ__#1_label_B4-0-0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_model(_OracleModel(), features, annotations)
    messages = [str(w.message) for w in caught]
    assert any("1 videos are named as violent but absent from the annotations" in m for m in messages)
    assert any("1 annotated videos have no features here, e.g. v=missing" in m for m in messages)
    assert report["counts"]["anomalous_videos"] == 1


def test_all_normal_features_give_nan_with_a_warning(tmp_path) -> None:
    _write_bare(tmp_path, n_crops=1)
    features = scan_features(tmp_path, split="test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_model(_OracleModel(), features, {}, protocol="csl")
    messages = [str(w.message) for w in caught]
    for level in LEVELS:
        assert f"{level}: labels contain only one class (0); AUC and AP are undefined and reported as NaN" in messages
    assert np.isnan(report["video"]["auc"])
    assert json_ready(report)["frame"]["auc"] is None


def test_evaluate_model_rejects_bad_options(tmp_path) -> None:
    _write_bare(tmp_path, n_crops=1)
    features = scan_features(tmp_path, split="test")
    with pytest.raises(ConfigError, match="parity_q11 applies only to the csl protocol"):
        evaluate_model(_OracleModel(), features, ANNOTATIONS, parity_q11=True)
    with pytest.raises(ConfigError, match="protocol must be 'standard' or 'csl'"):
        evaluate_model(_OracleModel(), features, ANNOTATIONS, protocol="paper")
    with pytest.raises(ConfigError, match="threshold must be a finite number"):
        evaluate_model(_OracleModel(), features, ANNOTATIONS, threshold=float("nan"))


def _cache_record(stem: str, n_clips: int, start: int, source: str | None = None) -> tuple[dict, np.ndarray]:
    n_frames = start + 16 * n_clips + 5
    times = np.arange(n_frames) / 25.0
    starts = [start + 16 * k for k in range(n_clips)]
    return {
        "schema_version": 1,
        "stem": stem,
        "source": {"path": f"/data/test/{source or stem}.mp4", "size": 1, "sha256": "0" * 64},
        "video": {
            "fps": 25.0,
            "n_frames": n_frames,
            "duration_s": n_frames / 25.0,
            "width": 64,
            "height": 48,
            "rotation": 0,
        },
        "clips": {
            "length": 16,
            "stride": 16,
            "count": n_clips,
            "start_frames": starts,
            "start_s": [float(times[s]) for s in starts],
            "end_s": [float(times[s + 15] + 0.04) for s in starts],
        },
        "crops": ["center"],
        "extractor": {
            "settings": {"clip_len": 16, "fps": None},
            "settings_key": "abcd",
            "weights_sha256": "1" * 64,
            "vadpipe_version": "0.1.0",
        },
        "status": "ok" if n_clips else "zero_clips",
        "error": None,
    }, times


def test_cache_folder_uses_record_clip_geometry(tmp_path) -> None:
    cache = tmp_path / "features"
    # Clips start at frame 3: the labels must follow the record's start frames.
    intervals = [(3 + 16 * 5, 3 + 16 * 9)]
    rec, times = _cache_record("fight-0123abcd", 12, start=3, source="fight")
    write_entry(cache, CacheRecord.from_dict(rec), [_oracle_features(12, intervals, start=3)], times)
    rec, times = _cache_record("calm", 10, start=3)
    write_entry(cache, CacheRecord.from_dict(rec), [_oracle_features(10, [], start=3)], times)
    rec, times = _cache_record("empty", 0, start=0)
    write_entry(cache, CacheRecord.from_dict(rec), [], times)
    with pytest.warns(DataWarning, match="skipped 1 feature file"):
        features = scan_features(cache, split="test")
    videos = group_videos(features)
    assert [v.name for v in videos] == ["calm", "fight-0123abcd"]
    assert videos[1].start_frames[:2].tolist() == [3, 19]
    # a clash-suffixed cache stem is found in the annotations by its source file's name
    report = evaluate_model(_OracleModel(), features, {"fight": intervals})
    assert report["counts"]["anomalous_videos"] == 1
    assert report["segment"]["auc"] == pytest.approx(1.0)
    assert report["frame"]["auc"] == pytest.approx(1.0)
    assert report["frame"]["n_positive"] == 16 * 4

    from vadpipe.model.net import ModelConfig
    from vadpipe.model.run_config import RunConfig

    def run(feature_dim: int, extraction: dict | None) -> RunConfig:
        return RunConfig(model=ModelConfig(feature_dim=feature_dim), extraction=extraction)

    check_features_match_run(run(4, {"settings_key": "abcd"}), features)
    with pytest.raises(ConfigError, match="extraction settings zzzz, but .* extracted with abcd"):
        check_features_match_run(run(4, {"settings_key": "zzzz"}), features)
    with pytest.raises(DataError, match="have width 4, the model expects 1024"):
        check_features_match_run(run(1024, None), features)


# --- the CLI, with a real run folder ------------------------------------------------------


def test_evaluate_cli(tmp_path) -> None:
    from click.testing import CliRunner

    from vadpipe.cli import main
    from vadpipe.model.net import CSLTAL, ModelConfig
    from vadpipe.model.run import save_run, set_latest

    torch.manual_seed(0)
    run_dir = save_run(tmp_path / "ws" / "runs" / "fresh", CSLTAL(ModelConfig()))
    set_latest(tmp_path / "ws" / "runs", run_dir)
    features = tmp_path / "xd" / "RGBTest"
    features.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (_, n_clips) in ANOMALOUS.items():
        np.save(features / f"{name}__0.npy", rng.normal(size=(n_clips, 1024)).astype(np.float32))
    for name, n_clips in NORMAL.items():
        np.save(features / f"{name}__0.npy", rng.normal(size=(n_clips, 1024)).astype(np.float32))
    annotations = tmp_path / "annotations.txt"
    annotations.write_text(
        "\n".join(f"{name}.mp4 " + " ".join(f"{s} {e}" for s, e in iv) for name, (iv, _) in ANOMALOUS.items())
    )
    common = ["evaluate", "--features", str(tmp_path / "xd"), "--annotations", str(annotations), "-q"]
    runner = CliRunner(env={"VADPIPE_HOME": str(tmp_path / "ws")})

    def check(report: dict, protocol: str) -> None:
        assert report["protocol"] == protocol
        assert report["model"] == str(run_dir)
        for level in LEVELS:
            assert set(report[level]) >= {"auc", "ap", "ap_trapezoid", "n", "n_positive"}
            assert 0 <= report[level]["auc"] <= 1
        assert report["counts"]["anomalous_videos"] == 2
        assert report["video"]["n"] == 4  # one crop per video: same count in both protocols
        lengths = (100, 200, 40, 7)
        kept = lengths if protocol == "standard" else [len(csl_rows(t)) for t in lengths]
        assert report["frame"]["n"] == 16 * sum(kept)

    # Default model: the workspace's latest run; JSON to a file, the table on stdout.
    out = tmp_path / "standard.json"
    result = runner.invoke(main, [*common, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 videos (2 anomalous)" in result.stdout
    assert all(level in result.stdout for level in LEVELS) and "AP trapz" in result.stdout
    assert "97.79/98.28" not in result.stdout  # Table 1 is shown for the csl protocol only
    check(json.loads(out.read_text()), "standard")

    # JSON to stdout, the table (with Table 1 beside it) on stderr.
    result = runner.invoke(main, [*common, "--run", str(run_dir), "--protocol", "csl", "--json", "-"])
    assert result.exit_code == 0, result.output
    check(json.loads(result.stdout), "csl")
    assert "AP trapz" in result.stderr and "97.79/98.28" in result.stderr

    result = runner.invoke(main, [*common, "--parity-q11"])
    assert result.exit_code == 2 and "parity_q11 applies only to the csl protocol" in result.stderr
    other = tmp_path / "wide" / "RGBTest"
    other.mkdir(parents=True)
    np.save(other / "x_label_A__0.npy", np.zeros((8, 16), np.float32))
    result = runner.invoke(
        main, [*common[:1], "--features", str(tmp_path / "wide"), *common[3:], "--run", str(run_dir)]
    )
    assert result.exit_code == 2 and "have width 16, the model expects 1024" in result.stderr


def test_cli_spells_protocols_and_levels_like_the_library() -> None:
    from vadpipe import cmd_evaluate, tables
    from vadpipe.postprocess import metrics

    assert (cmd_evaluate.PROTOCOLS, tables.LEVELS) == (metrics.PROTOCOLS, metrics.LEVELS)
