"""Table 1 metrics: sklearn parity, labels from annotations, and both protocols on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.scoring import clip_frame_labels, csl_rows
from vadpipe.postprocess.decisions import VideoDetections, detection_metrics, match_intervals, temporal_iou
from vadpipe.postprocess.metrics import (
    LEVELS,
    auc_ap,
    csl_entry,
    pooled_metrics,
    standard_entry,
)

# --- auc_ap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_auc_ap_equals_scikit_learn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.uniform(size=500) + 0.4 * y, 2)  # rounding makes ties, as the 0.05 clip does
    got = auc_ap(s, y)
    precision, recall, _ = precision_recall_curve(y, s)
    assert got["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["ap_trapezoid"] == pytest.approx(auc(recall, precision), abs=1e-12)
    assert got["ap"] != pytest.approx(got["ap_trapezoid"], abs=1e-6)  # two different numbers
    assert (got["n"], got["n_positive"]) == (500, int(y.sum()))


def test_auc_ap_hand_computed() -> None:
    # Descending: 0.8 (+), 0.5 (-), 0.3 (+), 0.2 (-). AUC: 3 of 4 pairs ordered.
    # AP = 0.5 * 1 + 0.5 * 2/3. PR points (R, P): (0, 1), (.5, 1), (.5, .5), (1, 2/3);
    # trapezoid = 0.5 * 1 + 0.5 * (0.5 + 2/3) / 2 = 19/24.
    got = auc_ap(np.array([0.8, 0.3, 0.5, 0.2]), np.array([1, 1, 0, 0]))
    assert got["auc"] == pytest.approx(0.75)
    assert got["ap"] == pytest.approx(5 / 6)
    assert got["ap_trapezoid"] == pytest.approx(19 / 24)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1]])
def test_single_class_labels_warn_and_give_nan(labels) -> None:
    with pytest.warns(
        UndefinedMetricWarning,
        match=r"^frame: labels contain only one class \(\d\); "
        "AUC and AP are undefined and reported as NaN$",
    ):
        got = auc_ap(np.array([0.1, 0.5, 0.9]), np.array(labels), level="frame")
    assert np.isnan(got["auc"]) and np.isnan(got["ap"]) and np.isnan(got["ap_trapezoid"])
    assert got["n"] == 3


def test_empty_pool_warns() -> None:
    with pytest.warns(UndefinedMetricWarning, match="video: no pairs"):
        assert np.isnan(auc_ap(np.zeros(0), np.zeros(0), level="video")["auc"])


def test_auc_ap_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="3 scores but 2 labels"):
        auc_ap(np.zeros(3), np.zeros(2))
    with pytest.raises(DataError, match="labels must be 0/1"):
        auc_ap(np.zeros(3), np.array([0, 2, 1]))
    with pytest.raises(DataError, match="NaN/inf"):
        auc_ap(np.array([0.1, np.nan]), np.array([0, 1]))


# --- labels from annotations ----------------------------------------------------------------


def test_clip_frame_labels_half_open_and_clipped() -> None:
    labels = clip_frame_labels([(5, 20), (40, 41), (45, 100)], start_frames=np.array([0, 16, 32]), clip_len=16)
    assert labels.shape == (3, 16) and labels.dtype == np.uint8
    expected = np.zeros(48, np.uint8)
    expected[5:20] = 1  # [s, e): frame 20 is not anomalous
    expected[40] = 1
    expected[45:48] = 1  # clipped to the 16 T horizon (XDVioDet's gt.npy)
    np.testing.assert_array_equal(labels.ravel(), expected)
    np.testing.assert_array_equal(labels.any(axis=1), [True, True, True])


def test_clip_frame_labels_follow_clip_start_frames() -> None:
    # Clips with a stride larger than their length: the frames between clips are never labels.
    labels = clip_frame_labels([(4, 9)], start_frames=np.array([0, 6]), clip_len=4)
    np.testing.assert_array_equal(labels, [[0, 0, 0, 0], [1, 1, 1, 0]])


def test_segment_labels_match_the_released_segment_labels() -> None:
    # annotations.txt: v=u5SF4SlqNDQ__#00-00-00_00-01-00_label_G-0-0 624 912 950 1441, T = 90;
    # segment_labels.txt has it positive at 39-56 and 59-89 (model/README.md §8).
    labels = clip_frame_labels([(624, 912), (950, 1441)], start_frames=16 * np.arange(90), clip_len=16)
    segments = labels.any(axis=1)
    np.testing.assert_array_equal(np.flatnonzero(segments), np.r_[np.arange(39, 57), np.arange(59, 90)])
    assert labels.sum() == (912 - 624) + (1440 - 950)  # frames past 16 T = 1440 fall off


# --- csl protocol ---------------------------------------------------------------------------


def test_csl_entry_lines_up_the_compressed_curve_with_the_kept_frames() -> None:
    frame_labels = clip_frame_labels([(0, 3)], start_frames=2 * np.arange(7), clip_len=2)
    rows = csl_rows(7)  # [0, 3]
    e = csl_entry(np.array([0.9, 0.3], np.float32), rows, 0.8, 1, frame_labels)
    np.testing.assert_array_equal(e.segment_labels, [1, 0])
    np.testing.assert_array_equal(e.frame_labels, [1, 1, 0, 0])  # frames 0, 1 then 6, 7
    assert e.frame_scores.shape == (4,)
    assert (e.video_score, e.video_label) == (pytest.approx(0.8), 1)


def _f32(*values: float) -> np.ndarray:
    # float32 constant curves stay exactly constant through the spline, so ties are exact
    return np.array(values, np.float32)


def test_csl_protocol_hand_computed() -> None:
    clip_len, n_clips = 2, 7
    rows = csl_rows(n_clips)  # [0, 3]
    anomalous = clip_frame_labels(
        [(0, 3)], start_frames=clip_len * np.arange(n_clips), clip_len=clip_len
    )  # kept frames [1, 1, 0, 0]
    normal = np.zeros((n_clips, clip_len), np.uint8)
    entries = [
        csl_entry(_f32(0.9, 0.9), rows, 0.8, 1, anomalous),  # crop 0 of video A
        csl_entry(_f32(0.3, 0.3), rows, 0.3, 1, anomalous),  # crop 1 of video A
        csl_entry(_f32(0.2, 0.2), rows, 0.5, 0, normal),  # crop 0 of video B
        csl_entry(_f32(0.6, 0.6), rows, 0.2, 0, normal),  # crop 1 of video B
    ]
    got = pooled_metrics(entries, protocol="csl")
    assert got["protocol"] == "csl"
    # video: one pair per crop; positives {0.8, 0.3} vs negatives {0.5, 0.2}: 3 of 4 ordered.
    assert got["video"]["auc"] == pytest.approx(3 / 4) and got["video"]["n"] == 4
    assert got["video"]["ap"] == pytest.approx(5 / 6)
    # segment: positives {0.9, 0.3}, negatives {0.9, 0.3, 0.2, 0.2, 0.6, 0.6}:
    # 0.9 -> 5 wins + 1 tie; 0.3 -> 2 wins + 1 tie; (5.5 + 2.5) / 12.
    assert got["segment"]["auc"] == pytest.approx(8 / 12)
    assert (got["segment"]["n"], got["segment"]["n_positive"]) == (8, 2)
    # frame: same ordering with every segment doubled (2 frames): 32 / 48.
    assert got["frame"]["auc"] == pytest.approx(32 / 48)
    assert (got["frame"]["n"], got["frame"]["n_positive"]) == (16, 4)
    # proposal: 0.3 and 0.2 are below the 0.35 threshold and paint 0, so crop A1's positives
    # now tie with 6 negatives: 0.9 -> 10 wins + 2 ties = 11 each; 0 -> 6 ties = 3 each.
    assert got["proposal"]["auc"] == pytest.approx((2 * 11 + 2 * 3) / 48)
    assert set(got) == {"protocol", *LEVELS, "detection"}


# --- standard protocol ----------------------------------------------------------------------


def test_standard_protocol_hand_computed() -> None:
    clip_len, n_clips = 2, 3
    starts = clip_len * np.arange(n_clips)
    a_labels = clip_frame_labels([(2, 4)], start_frames=starts, clip_len=clip_len)  # [0,0,1,1,0,0]
    c_labels = clip_frame_labels([(0, 1)], start_frames=starts, clip_len=clip_len)  # [1,0,0,0,0,0]
    entries = [
        # video A: curve 0.3; video B: 0.32; video C: 0.8 (crops already averaged by score_video).
        standard_entry(_f32(0.3, 0.3, 0.3), 0.7, 1, a_labels),
        standard_entry(_f32(0.32, 0.32, 0.32), 0.6, 0, np.zeros((3, 2), np.uint8)),
        standard_entry(_f32(0.8, 0.8, 0.8), 0.3, 1, c_labels),
    ]
    a = entries[0]
    np.testing.assert_allclose(a.segment_scores, [0.3, 0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose(a.frame_scores, np.full(6, 0.3), rtol=1e-6)  # repeated x clip_len
    np.testing.assert_array_equal(a.frame_labels, [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(a.proposal_scores, np.zeros(6))  # 0.3 <= 0.35: no proposal
    np.testing.assert_allclose(entries[2].proposal_scores, np.full(6, 0.8), rtol=1e-6)
    got = pooled_metrics(entries, protocol="standard")
    # video: one pair per video: A 0.7 (+), B 0.6 (-), C 0.3 (+) -> 1 of 2.
    assert got["video"]["auc"] == pytest.approx(0.5) and got["video"]["n"] == 3
    # segment: positives {0.3 (A), 0.8 (C)}; negatives {0.3 x2, 0.32 x3, 0.8 x2}:
    # 0.3 -> 2 ties = 1; 0.8 -> 5 wins + 2 ties = 6; 7 / 14.
    assert got["segment"]["auc"] == pytest.approx(7 / 14)
    # frame: positives 0.3 x2, 0.8 x1; negatives 0.3 x4, 0.32 x6, 0.8 x5:
    # 0.3 -> 4 ties = 2 each; 0.8 -> 10 wins + 5 ties = 12.5; (4 + 12.5) / 45.
    assert got["frame"]["auc"] == pytest.approx(16.5 / 45)
    assert (got["frame"]["n"], got["frame"]["n_positive"]) == (18, 3)
    # proposal: A and B paint 0: positives 0 x2, 0.8 x1; negatives 0 x10, 0.8 x5:
    # 0 -> 10 ties = 5 each; 0.8 -> 10 wins + 5 ties = 12.5; (10 + 12.5) / 45.
    assert got["proposal"]["auc"] == pytest.approx(22.5 / 45)


def test_standard_frame_level_equals_sklearn_on_concatenated_gt() -> None:
    # The XDVioDet computation: concatenate gt (zeros(16 T), [s, e) set) and np.repeat scores.
    rng = np.random.default_rng(7)
    entries, gt, pred = [], [], []
    for n_clips, intervals in ((12, [(3, 40), (100, 180)]), (9, []), (20, [(0, 16)])):
        psi = rng.uniform(size=n_clips).astype(np.float32)
        labels = clip_frame_labels(intervals, start_frames=16 * np.arange(n_clips), clip_len=16)
        entries.append(standard_entry(psi, rng.uniform(), int(bool(intervals)), labels))
        g = np.zeros(16 * n_clips)
        for s, e in intervals:
            g[s:e] = 1
        gt.append(g)
        pred.append(np.repeat(psi, 16))
    got = pooled_metrics(entries, protocol="standard")
    gt, pred = np.concatenate(gt), np.concatenate(pred)
    precision, recall, _ = precision_recall_curve(gt, pred)
    assert got["frame"]["auc"] == pytest.approx(roc_auc_score(gt, pred), abs=1e-12)
    assert got["frame"]["ap_trapezoid"] == pytest.approx(auc(recall, precision), abs=1e-12)
    assert got["frame"]["ap"] == pytest.approx(average_precision_score(gt, pred), abs=1e-12)


def test_all_normal_set_warns_per_level() -> None:
    entry = standard_entry(_f32(0.5, 0.5), 0.5, 0, np.zeros((2, 16), np.uint8))
    with pytest.warns(UndefinedMetricWarning, match="only one class") as record:
        got = pooled_metrics([entry], protocol="standard")
    levels = {str(w.message).split(":")[0] for w in record if "only one class" in str(w.message)}
    assert levels == set(LEVELS)
    assert all(np.isnan(got[level]["auc"]) for level in LEVELS)
    # the decisions of an all-normal set: no anomalous video, no ground truth to recall
    assert got["detection"]["false_alarm_rate"] == 1.0 and np.isnan(got["detection"]["detection_rate"])


def test_entry_shape_errors_and_protocol_name() -> None:
    labels = np.zeros((4, 2), np.uint8)
    with pytest.raises(DataError, match="rows reach 5 but the video has 4 clips"):
        csl_entry(_f32(0.1, 0.2), np.array([0, 5]), 0.5, 0, labels)
    with pytest.raises(DataError, match=r"wtcam must be \(T,\) with T = 4 clips like the labels, got \(3,\)"):
        standard_entry(_f32(0.1, 0.2, 0.3), 0.5, 0, labels)
    with pytest.raises(ConfigError, match="protocol must be one of standard, csl"):
        pooled_metrics([], protocol="paper")


# --- decisions at an operating point --------------------------------------------------------


def test_temporal_iou_hand_computed_and_edge_cases() -> None:
    iou = temporal_iou([(0, 10)], [(5, 15), (0, 10), (10, 20), (2, 4), (0, 30)])
    # overlap 5 of 15 frames; identical; touching [0, 10) and [10, 20) share no frame;
    # [2, 4) inside: 2 / 10; [0, 10) inside [0, 30): 10 / 30
    np.testing.assert_allclose(iou, [[1 / 3, 1.0, 0.0, 0.2, 1 / 3]])
    assert temporal_iou([], [(0, 1)]).shape == (0, 1)
    with pytest.raises(DataError, match=r"needs s < e, got \[5, 5\]"):
        temporal_iou([(5, 5)], [(0, 1)])


def test_match_intervals_is_greedy_by_score_and_one_to_one() -> None:
    # Two predictions on one event: the higher-scored one matches, the other is a false positive.
    assert match_intervals([(0, 10), (1, 10)], [0.5, 0.9], [(0, 10)], iou_threshold=0.5) == [(1, 0)]
    # Greedy, not optimal: A (0.9) overlaps T1 and T2 equally (1/3 each) and takes the earlier
    # T1; B (0.8) fits T1 exactly but it is taken, and B does not overlap T2: 1 match, not 2.
    pairs = match_intervals([(5, 15), (0, 10)], [0.9, 0.8], [(0, 10), (10, 20)], iou_threshold=0.3)
    assert pairs == [(0, 0)]
    # IoU exactly at the threshold matches; just below does not.
    assert match_intervals([(0, 10)], [1.0], [(0, 20)], iou_threshold=0.5) == [(0, 0)]
    assert match_intervals([(0, 10)], [1.0], [(0, 21)], iou_threshold=0.5) == []
    assert match_intervals([], [], [(0, 5)], iou_threshold=0.3) == []
    assert match_intervals([(0, 5)], [0.4], [], iou_threshold=0.3) == []
    with pytest.raises(ConfigError, match=r"iou_threshold must lie in \(0, 1\]"):
        match_intervals([(0, 5)], [0.4], [(0, 5)], iou_threshold=0.0)


def _hand_set() -> list[VideoDetections]:
    def frames(flags, labels):
        return {"frame_flags": np.array(flags, bool), "frame_labels": np.array(labels, np.uint8)}

    return [
        VideoDetections(0, ((0, 10),), (0.6,), (), **frames([1, 1, 0, 0], [0, 0, 0, 0])),  # a false alarm
        VideoDetections(0, (), (), (), **frames([0, 0, 0, 0], [0, 0, 0, 0])),
        # IoU with [0, 20): 16 / 20 = 0.8, a hit at 0.3 and 0.5; [50, 100) vs [40, 60): 10 / 60, a miss
        VideoDetections(1, ((0, 16), (50, 100)), (0.8, 0.7), ((0, 20), (40, 60)), **frames([1, 1, 0, 1], [1, 1, 1, 0])),
        VideoDetections(1, (), (), ((10, 30),), **frames([0, 0, 0, 0], [0, 1, 1, 0])),  # missed
    ]


def test_detection_metrics_hand_computed() -> None:
    got = detection_metrics(_hand_set())
    assert (got["false_alarm_rate"], got["normal_videos"], got["normal_videos_flagged"]) == (0.5, 2, 1)
    assert (got["detection_rate"], got["anomalous_videos"], got["anomalous_videos_flagged"]) == (0.5, 2, 1)
    for key in ("iou_0.3", "iou_0.5"):
        m = got["intervals"][key]
        assert (m["true_positives"], m["reported"], m["ground_truth"]) == (1, 3, 3)
        assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
        assert m["f1"] == pytest.approx(2 * 1 / (3 + 3))
    # frames: 11 negatives, 3 of them flagged (2 in the false alarm, 1 in the anomalous video);
    # 5 positives, 2 flagged
    assert got["frame"]["fpr"] == pytest.approx(3 / 11) and got["frame"]["tpr"] == pytest.approx(2 / 5)
    assert (got["frame"]["false_positive_frames"], got["frame"]["negative_frames"]) == (3, 11)


def test_detection_metrics_without_any_interval() -> None:
    quiet = [
        VideoDetections(v.label, (), (), v.truth, np.zeros_like(v.frame_flags), v.frame_labels) for v in _hand_set()
    ]
    with pytest.warns(UndefinedMetricWarning, match="interval precision at IoU 0.3: no reported intervals"):
        got = detection_metrics(quiet)
    m = got["intervals"]["iou_0.3"]
    assert np.isnan(m["precision"]) and m["recall"] == 0.0 and m["f1"] == 0.0  # 2 TP / (0 + 3)
    assert got["false_alarm_rate"] == 0.0 and got["detection_rate"] == 0.0 and got["frame"]["fpr"] == 0.0
    with pytest.warns(UndefinedMetricWarning, match="false_alarm_rate: no normal videos"):
        assert np.isnan(detection_metrics([quiet[2]])["false_alarm_rate"])


def test_entries_gate_videos_and_clip_the_truth_to_the_scored_frames() -> None:
    labels = clip_frame_labels([(20, 200)], start_frames=16 * np.arange(4), clip_len=16)
    psi = _f32(0.1, 0.9, 0.9, 0.9)
    entry = standard_entry(psi, 0.7, 1, labels, truth=[(20, 200), (300, 400)])
    d = entry.detections
    assert d.truth == ((20, 64),)  # clipped to the 4 x 16 frames, the one beyond them dropped
    (interval,) = d.intervals
    assert 8 <= interval[0] <= 16 and interval[1] == 64
    assert d.frame_flags.sum() == 64 - interval[0] and entry.proposal_scores.max() > 0.8
    gated = standard_entry(psi, 0.7, 1, labels, video_threshold=0.75)
    assert gated.detections.intervals == () and not gated.proposal_scores.any()
    assert gated.detections.truth == ((20, 64),)  # from the labels: the run of annotated frames
    # csl: rows [0, 3, 6] are scored; a run of the compressed curve maps back through them, so
    # the peak on row 3 (frames 48-63) gives an interval around those frames
    crop = csl_entry(
        _f32(0.1, 0.9, 0.1),
        csl_rows(9),
        0.9,
        1,
        clip_frame_labels([(48, 64)], start_frames=16 * np.arange(9), clip_len=16),
    )
    ((start, end),) = crop.detections.intervals
    assert 0 < start < 48 and 64 < end < 112
    assert crop.detections.truth == ((48, 64),)
