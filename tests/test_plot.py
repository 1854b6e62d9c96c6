"""Score plots are written as valid PNGs of a readable size."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from vadpipe.errors import DataError
from vadpipe.postprocess.intervals import Interval
from vadpipe.postprocess.plot import plot_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curves(n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    times = np.arange(n) / 25.0
    attention = 0.5 + 0.45 * np.sin(np.linspace(0, 6, n))
    tcam = np.linspace(0.2, 0.9, n)
    return times, {"attention": attention, "tcam": tcam, "wtcam": attention * tcam}


def test_plot_is_a_png_of_sensible_size(tmp_path) -> None:
    times, curves = _curves(400)
    path = plot_scores(
        tmp_path / "plots" / "street.png",
        times_s=times,
        curves=curves,
        threshold=0.35,
        intervals=[Interval(50, 120, 2.0, 4.8, 0.7), (10.0, 12.5)],
        ground_truth=[(2.4, 5.0)],
        title="street.mp4",
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 800 <= width <= 2000 and 250 <= height <= 800
    # Not a blank canvas: curves and shading make many distinct colours.
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 50
    assert [p.name for p in path.parent.iterdir()] == ["street.png"]


def test_plot_without_intervals_or_ground_truth(tmp_path) -> None:
    times, curves = _curves(3)
    path = plot_scores(
        tmp_path / "a.png", times_s=times, curves={"wtcam": curves["wtcam"]}, threshold=0.5, intervals=[], title="short"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_rejects_misaligned_curves(tmp_path) -> None:
    times, curves = _curves(10)
    with pytest.raises(DataError, match=r"curve 'tcam' has shape \(9,\), times_s \(10,\)"):
        plot_scores(
            tmp_path / "a.png",
            times_s=times,
            curves={"tcam": curves["tcam"][:9]},
            threshold=0.35,
            intervals=[],
            title="x",
        )
    with pytest.raises(DataError, match="curves is empty"):
        plot_scores(tmp_path / "a.png", times_s=times, curves={}, threshold=0.35, intervals=[], title="x")
    assert not (tmp_path / "a.png").exists()
