"""Property-based tests of the input parsers and of interval extraction (issue 5, item 7).

The parsers read files people write by hand: any text (or bytes) must give the parsed value or
one ``DataError``/``ConfigError``, never another exception; valid content must round-trip.
Interval extraction must give sorted, disjoint intervals inside the video, each covering only
frames above the threshold, for any score curve and any (variable) frame timing.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vadpipe.errors import ConfigError, DataError
from vadpipe.model.labels import parse_annotations, read_labels_csv
from vadpipe.model.run_config import SavedOperatingPoint
from vadpipe.postprocess.frame_intervals import build_video_intervals
from vadpipe.postprocess.intervals import IntervalsDocument, OperatingPoint, document_to_dict, validate_document
from vadpipe.postprocess.proposals import find_proposals, interpolate_to_frames

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROUND_TRIP = settings(FUZZ, max_examples=80)

# Text that looks like the real files often enough to reach deep into the parsers.
_TOKENS = st.sampled_from(
    [
        "video",
        "label",
        "v1",
        "v1.mp4",
        "a,b",
        '"',
        '""',
        "0",
        "1",
        "-3",
        "12",
        "x",
        "normal",
        "Anomalous",
        "abnormal",
        "2",
        "1e3",
        "١٢",
        "\ufeff",
        " ",
        "\t",
        ",",
        "\n",
        "\r\n",
        "\x00",
        "\x1c",
        "\u2028",
        "é",
        "#",
        "=",
    ]
)
_FILE_TEXT = st.one_of(st.text(max_size=200), st.lists(_TOKENS, max_size=40).map("".join))


def _write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(data)
    return path


# --- labels CSV ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.one_of(_FILE_TEXT, _FILE_TEXT.map(lambda t: "video,label\n" + t), st.binary(max_size=200)))
def test_labels_csv_never_crashes(tmp_path, data) -> None:
    path = _write(tmp_path, "labels.csv", data)
    try:
        labels = read_labels_csv(path)
    except (DataError, ConfigError) as exc:
        assert str(path) in str(exc)  # every message names the file
        return
    assert labels and all(v in (0, 1) for v in labels.values())
    assert all(name and name == name.strip() for name in labels)


# A name survives csv quoting and the parser's whitespace stripping: printable, no control
# characters (a CR inside a name is a newline once the file is read as text), no outer spaces.
_NAME = (
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)
_WORDS = {0: ["0", "normal", "Normal", " NORMAL "], 1: ["1", "anomalous", "Abnormal", "ANOMALOUS"]}


@ROUND_TRIP
@given(labels=st.dictionaries(_NAME, st.integers(0, 1), min_size=1, max_size=20), data=st.data())
def test_labels_csv_round_trips(tmp_path, labels, data) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=data.draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(["video", "label"])
    for name, label in labels.items():
        writer.writerow([name, data.draw(st.sampled_from(_WORDS[label]))])
    path = _write(tmp_path, "labels.csv", buffer.getvalue())
    assert read_labels_csv(path) == labels


# --- annotations ---------------------------------------------------------------------------------


@FUZZ
@given(data=st.one_of(_FILE_TEXT, st.binary(max_size=200)))
def test_annotations_never_crash(tmp_path, data) -> None:
    path = _write(tmp_path, "annotations.txt", data)
    try:
        result = parse_annotations(path)
    except (DataError, ConfigError) as exc:
        assert str(path) in str(exc)
        return
    for name, intervals in result.items():
        assert name and not any(c.isspace() for c in name)
        assert intervals and all(0 <= s < e for s, e in intervals)


_ANN_NAME = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda n: not any(c.isspace() for c in n) and not n.endswith(".mp4")
)
_SPAN = st.tuples(st.integers(0, 10**9), st.integers(1, 10**6)).map(lambda p: (p[0], p[0] + p[1]))


@ROUND_TRIP
@given(truth=st.dictionaries(_ANN_NAME, st.lists(_SPAN, min_size=1, max_size=5), max_size=15), data=st.data())
def test_annotations_round_trip(tmp_path, truth, data) -> None:
    lines = []
    for name, spans in truth.items():
        suffix = data.draw(st.sampled_from(["", ".mp4"]))  # the released file names some videos with .mp4
        sep = data.draw(st.sampled_from([" ", "  ", "\t"]))
        lines.append(sep.join([name + suffix, *(f"{s}{sep}{e}" for s, e in spans)]))
        if data.draw(st.booleans()):
            lines.append("")  # blank lines are allowed
    path = _write(tmp_path, "annotations.txt", "\n".join(lines) + data.draw(st.sampled_from(["", "\n"])))
    assert parse_annotations(path) == truth


def test_parsers_report_undecodable_files(tmp_path) -> None:
    latin1 = _write(tmp_path, "ann.txt", "vidéo 1 2\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        parse_annotations(latin1)
    labels = _write(tmp_path, "labels.csv", "video,label\nvidéo,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_labels_csv(labels)


# --- proposals and intervals ---------------------------------------------------------------------

_SCORES = arrays(np.float64, st.integers(1, 24), elements=st.floats(-0.5, 1.5, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(psi=_SCORES, clip_len=st.integers(1, 16), threshold=st.floats(0, 1), low=st.floats(0, 0.5))
def test_proposals_of_interpolated_curves(psi, clip_len, threshold, low) -> None:
    curve = interpolate_to_frames(psi, clip_len=clip_len, low=low, high=1.0)
    assert curve.shape == (clip_len * psi.size,)
    props = find_proposals(curve, threshold=threshold)
    end = 0
    for p in props:
        assert end <= p.start < p.end <= curve.size  # sorted, disjoint, inside
        assert np.all(curve[p.start : p.end] > threshold)  # only frames above the threshold
        assert threshold <= p.score <= 1.0  # a mean of values above t; == t only by rounding
        end = p.end + 1  # maximal runs: a frame at or below the threshold separates two proposals
    covered = np.zeros(curve.size, dtype=bool)
    for p in props:
        covered[p.start : p.end] = True
    np.testing.assert_array_equal(covered, curve > threshold)  # and every such frame is covered


@st.composite
def _videos(draw):
    """Per-clip scores, clip geometry and variable-rate frame times of one video."""
    n_clips = draw(st.integers(1, 12))
    clip_len = draw(st.integers(1, 16))
    stride = clip_len + draw(st.sampled_from([0, 0, 0, 1, 5]))
    tail = draw(st.integers(0, clip_len - 1))  # trailing frames that fill no clip
    n_frames = (n_clips - 1) * stride + clip_len + tail
    steps = draw(arrays(np.float64, n_frames, elements=st.floats(0.001, 0.2)))
    times = np.concatenate([[0.0], np.cumsum(steps)[:-1]]) + draw(st.floats(0, 5))
    video_end_s = float(times[-1] + steps[-1])
    unit = st.floats(0, 1)
    attention = draw(arrays(np.float64, n_clips, elements=unit))
    tcam = draw(arrays(np.float64, n_clips, elements=unit))
    return attention, tcam, clip_len, np.arange(n_clips) * stride, times, video_end_s


@settings(max_examples=200, deadline=None)
@given(
    video=_videos(),
    threshold=st.floats(0, 1),
    min_duration_s=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
    merge_gap_s=st.sampled_from([0.0, 0.0, 0.02, 0.5]),
)
def test_intervals_are_sorted_disjoint_inside_the_video_and_above_threshold(
    video, threshold, min_duration_s, merge_gap_s
) -> None:
    attention, tcam, clip_len, starts, times, video_end_s = video
    op = OperatingPoint(
        SavedOperatingPoint(threshold=threshold), min_duration_s=min_duration_s, merge_gap_s=merge_gap_s
    )
    entry = build_video_intervals(
        source="v.mp4",
        attention=attention,
        tcam=tcam,
        wtcam=attention * tcam,
        video_score=0.5,
        start_frames=starts,
        clip_len=clip_len,
        frame_times_s=times,
        duration_s=video_end_s - times[0],
        fps=25.0,
        video_end_s=video_end_s,
        operating_point=op,
    )
    validate_document(document_to_dict(IntervalsDocument(videos=(entry,), operating_point=op)))
    clip_frames = (starts[:, None] + np.arange(clip_len)[None]).ravel()  # source frame of each curve value
    curve = interpolate_to_frames((attention * tcam).astype(np.float32), clip_len=clip_len, low=op.low, high=op.high)
    previous_end = -1
    for interval in entry.intervals:
        assert previous_end < interval.start_frame < interval.end_frame <= times.size
        assert times[0] <= interval.start_s < interval.end_s <= video_end_s
        assert interval.start_s == times[interval.start_frame]
        assert interval.end_s - interval.start_s >= min_duration_s
        assert threshold <= interval.score <= 1.0 or merge_gap_s > 0
        previous_end = interval.end_frame
        inside = (clip_frames >= interval.start_frame) & (clip_frames < interval.end_frame)
        if merge_gap_s == 0:
            assert np.all(curve[inside] > threshold)  # every scored frame it covers is above the threshold
    if min_duration_s == 0 and merge_gap_s == 0:
        covered = np.zeros(times.size, dtype=bool)
        for interval in entry.intervals:
            covered[interval.start_frame : interval.end_frame] = True
        assert np.all(covered[clip_frames[curve > threshold]])  # nothing above the threshold is lost
