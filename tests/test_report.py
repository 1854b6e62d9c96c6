"""`vadpipe report`: the static review folder, checked in a real headless Chromium.

The intervals document is built from real encoded videos (their decoded frame times) with
chosen per-clip scores, so where each interval lies is known; the browser tests open the folder
from the file system with Debian's chromium driven by Playwright.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import moving_frames, write_video

from vadpipe.cli import main
from vadpipe.extract.decode import open_frames
from vadpipe.model.labels import parse_annotations, read_labels_csv
from vadpipe.postprocess.frame_intervals import build_video_intervals, end_time_s
from vadpipe.postprocess.intervals import IntervalsDocument, OperatingPoint, document_to_dict, read_intervals
from vadpipe.postprocess.report import ReportOptions, build_report
from vadpipe.postprocess.report.media import make_proxy, probe_playability

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CLIP = 16


def _scored(path: Path, wtcam: list[float]) -> dict:
    """The document entry of a real video with the given per-clip weighted T-CAM (attention 1)."""
    with open_frames(path) as (info, frames):
        times = np.array([f.time_s for f in frames])
    n_clips = len(times) // CLIP
    assert n_clips == len(wtcam), (path, n_clips)
    scores = np.array(wtcam, dtype=np.float32)
    video = build_video_intervals(
        source=str(path),
        attention=np.ones(n_clips, np.float32),
        tcam=scores,
        wtcam=scores,
        video_score=float(scores.max()),
        start_frames=np.arange(n_clips) * CLIP,
        clip_len=CLIP,
        frame_times_s=times,
        duration_s=end_time_s(times),
        fps=info.fps,
    )
    return document_to_dict(IntervalsDocument(videos=(video,), operating_point=OperatingPoint()))["videos"][0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-videos")
    frames = {n: moving_frames(n, 160, 120, seed=n) for n in (96, 128, 160)}
    return {
        "alarm": write_video(root / "cam1" / "alarm.mp4", frames[128]),  # 8 clips, one interval
        "quiet": write_video(root / "cam1" / "quiet.mp4", frames[96]),  # 6 clips, none
        "legacy": write_video(root / "cam2" / "legacy cam.avi", frames[160], codec="msmpeg4"),  # 10 clips, two
        "gone": write_video(root / "cam2" / "gone.mp4", frames[96]),  # deleted below
    }


@pytest.fixture(scope="module")
def doc_path(videos, tmp_path_factory) -> Path:
    entries = [
        _scored(videos["alarm"], [0.1, 0.2, 0.8, 0.9, 0.7, 0.1, 0.1, 0.1]),
        _scored(videos["quiet"], [0.1, 0.15, 0.2, 0.1, 0.1, 0.05]),
        _scored(videos["legacy"], [0.1, 0.6, 0.6, 0.1, 0.1, 0.1, 0.5, 0.55, 0.1, 0.1]),
        _scored(videos["gone"], [0.4, 0.5, 0.1, 0.1, 0.1, 0.1]),
    ]
    videos["gone"].unlink()
    doc = document_to_dict(IntervalsDocument(videos=()))
    doc["videos"] = entries
    doc["not_scored"] = [{"source": "tiny.mp4", "reason": "too short: fewer frames than one clip"}]
    doc["damaged"] = [{"source": str(videos["legacy"]), "damage": "2 damaged packet(s) skipped (test)"}]
    path = tmp_path_factory.mktemp("report-doc") / "intervals.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def built(doc_path, tmp_path_factory):
    """The report built through the CLI, with ground truth for alarm.mp4."""
    out = tmp_path_factory.mktemp("report") / "review"
    truth = doc_path.parent / "annotations.txt"
    truth.write_text("alarm 40 72\n")
    result = CliRunner().invoke(main, ["report", str(doc_path), "--out", str(out), "--annotations", str(truth), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    return out, result.output


def _page_data(path: Path) -> dict:
    text = path.read_text()
    return json.loads(
        re.search(r'<script id="report-data" type="application/json">(.*?)</script>', text, re.S)
        .group(1)
        .replace("<\\/", "</")
    )


# --- without a browser --------------------------------------------------------------------------


def test_playability_is_decided_from_container_codec_and_pixels(videos, make_video):
    assert probe_playability(videos["alarm"]).native
    legacy = probe_playability(videos["legacy"])
    assert not legacy.native and "msmpeg4" in legacy.reason
    odd = make_video("odd.mp4", n_frames=20, width=97, height=64)  # odd width: conftest writes yuv444p
    assert not probe_playability(odd).native
    webm = make_video("clip.webm", n_frames=20, codec="libvpx-vp9")
    assert probe_playability(webm).native
    mkv = make_video("clip.mkv", n_frames=20)
    assert not probe_playability(mkv).native


def test_report_folder_has_index_pages_thumbnails_and_one_proxy(built, videos):
    out, output = built
    index = _page_data(out / "index.html")
    names = [v["name"] for v in index["videos"]]
    assert names == ["alarm.mp4", "quiet.mp4", "legacy cam.avi", "gone.mp4"]
    by_name = {v["name"]: v for v in index["videos"]}
    assert [v["n_intervals"] for v in index["videos"]] == [1, 0, 2, 1]
    assert by_name["legacy cam.avi"]["media_kind"] == "proxy" and by_name["alarm.mp4"]["media_kind"] == "source"
    assert by_name["gone.mp4"]["media_kind"] == "missing" and by_name["gone.mp4"]["thumbs"] == []
    assert by_name["legacy cam.avi"]["damaged"].startswith("2 damaged")
    assert index["not_scored"][0]["source"] == "tiny.mp4"
    assert any("gone.mp4: source not found" in p for p in index["problems"]) and "gone.mp4" in output
    for v in index["videos"][:3]:  # a thumbnail per interval (one at the curve's peak without any)
        assert len(v["thumbs"]) == max(1, v["n_intervals"])
        for t in v["thumbs"]:
            assert (out / t.replace("%20", " ")).stat().st_size > 500
    for name in ("report.css", "common.js", "index.js", "video.js"):
        assert (out / "assets" / name).is_file()
    page = _page_data(out / "videos" / "0001.html")
    assert page["truth"] == [[pytest.approx(40 / 25), pytest.approx(72 / 25)]]
    assert len(page["clips"]["t"]) == 8 and page["media"]["src"].startswith("..")
    assert (out / "videos" / page["media"]["src"]).resolve() == videos["alarm"].resolve()
    proxies = list((out / "media").glob("*.mp4"))
    assert len(proxies) == 1
    with av.open(str(proxies[0])) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.format.name == "yuv420p"
        assert s.height <= 480 and sum(1 for _ in c.decode(s)) == 160  # every frame kept
    assert (
        "http://" not in (out / "index.html").read_text()
        and "https://" not in (out / "assets" / "video.js").read_text()
    )


def test_thumbnail_is_the_frame_at_the_interval_peak(built, videos):
    out, _ = built
    page = _page_data(out / "videos" / "0001.html")
    peak = page["video"]["intervals"][0]["peak_s"]
    assert peak == pytest.approx((3 * CLIP + CLIP / 2) / 25)  # clip 3 holds the highest score
    from PIL import Image

    thumb = np.asarray(Image.open(out / page["video"]["thumbs"][0]).convert("RGB")).astype(int)
    square = (thumb[..., 0] > 220) & (thumb[..., 2] < 90)  # the moving square (255, *, 30)
    x = np.nonzero(square)[1].mean() * 160 / thumb.shape[1]
    k = peak * 25  # the frame shown at the peak; the square moves ~1 px a frame (conftest.moving_frames)
    side = 30
    assert x == pytest.approx((160 - side) * k / 127 + side / 2, abs=3)


def test_rebuild_reuses_media_and_never_copies_sources_unless_asked(built, doc_path, videos, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(built[0], out)  # the module's report stays as built
    proxy = next((out / "media").glob("*.mp4"))
    before = proxy.stat().st_mtime_ns
    doc = read_intervals(doc_path)
    build_report(doc, out, doc_path=doc_path)
    assert proxy.stat().st_mtime_ns == before
    assert not any(p.suffix == ".mp4" and "alarm" in p.name for p in (out / "media").iterdir())
    copied = tmp_path / "copied"
    build_report(doc, copied, options=ReportOptions(proxy="never", copy_sources=True), doc_path=doc_path)
    media = sorted(p.name for p in (copied / "media").iterdir())
    assert len(media) == 3 and any(m.endswith("alarm.mp4") for m in media)
    page = _page_data(copied / "videos" / "0003.html")
    assert page["media"]["kind"] == "copy" and "media/" in page["media"]["src"]


def test_relative_sources_are_found_beside_the_intervals_file(doc_path, videos, tmp_path):
    root = videos["alarm"].parents[1]
    doc = json.loads(doc_path.read_text())
    doc["videos"] = [{**v, "source": str(Path(v["source"]).relative_to(root))} for v in doc["videos"][:3]]
    moved = root / "relative.json"
    moved.write_text(json.dumps(doc))
    result = build_report(read_intervals(moved), tmp_path / "r", doc_path=moved)
    assert result.problems == () and result.n_proxies == 1
    page = _page_data(tmp_path / "r" / "videos" / "0001.html")
    assert (tmp_path / "r" / "videos" / page["media"]["src"]).resolve() == videos["alarm"].resolve()


def test_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "videos": []}')
    result = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "operating_point is missing" in result.output


def test_proxy_keeps_the_frame_times_of_a_variable_rate_upright_source(tmp_path):
    from fractions import Fraction

    pts = [int(1000 * t) for t in np.cumsum(np.r_[0, np.where(np.arange(39) % 2, 0.02, 0.1)])]
    source = write_video(
        tmp_path / "vfr.mov",
        moving_frames(40, 640, 360),
        codec="mpeg4",
        pts=pts,
        time_base=Fraction(1, 1000),
        rotation=90,
    )
    assert not probe_playability(source).native
    proxy = tmp_path / "proxy.mp4"
    make_proxy(source, proxy)
    with open_frames(source) as (_, frames):
        want = [f.time_s for f in frames]
    with open_frames(proxy) as (info, frames):
        got = [f.time_s for f in frames]
    assert got == pytest.approx(want, abs=1e-3)
    assert (info.width, info.height) == (270, 480)  # upright (the source is shown rotated), at most 480 lines


def test_proxy_of_an_undecodable_file_is_a_clear_error(tmp_path):
    from vadpipe.errors import DecodeError

    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF" + os.urandom(2000))
    with pytest.raises(DecodeError, match="junk.avi"):
        make_proxy(junk, tmp_path / "p.mp4")
    assert not (tmp_path / "p.mp4").exists()


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: run `make setup-browser` (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    assert not pg.errors, pg.errors
    assert all(u.startswith(("file:", "blob:", "data:")) for u in pg.requests), pg.requests  # no network
    context.close()


def _rows(page) -> list[str]:
    return page.eval_on_selector_all("#videos tbody tr", "rows => rows.map(r => r.dataset.source.split('/').pop())")


def test_index_sorts_and_filters(page, built):
    out, _ = built
    page.goto((out / "index.html").as_uri())
    assert _rows(page) == ["alarm.mp4", "legacy cam.avi", "gone.mp4", "quiet.mp4"]  # video score, highest first
    page.click('th[data-sort="duration_s"]')
    assert _rows(page)[0] == "legacy cam.avi" and _rows(page)[1] == "alarm.mp4"
    page.click('th[data-sort="duration_s"]')
    assert _rows(page)[-2:] == ["alarm.mp4", "legacy cam.avi"]
    page.click('th[data-sort="n_intervals"]')
    assert _rows(page)[0] == "legacy cam.avi" and _rows(page)[-1] == "quiet.mp4"
    page.click('th[data-sort="peak"]')
    assert _rows(page)[:2] == ["alarm.mp4", "legacy cam.avi"]
    page.check("#flagged-only")
    assert sorted(_rows(page)) == ["alarm.mp4", "gone.mp4", "legacy cam.avi"]
    counts = page.text_content("#counts")
    assert "4 videos scored, 3 flagged; 1 not scored, 1 damaged" in counts
    assert "too short" in page.text_content("#not-scored")
    page.uncheck("#flagged-only")  # the thumbnails of every video but gone.mp4 load: 1 + 2 + 1
    page.wait_for_function(
        "[...document.querySelectorAll('#videos img')].filter(i => i.complete && i.naturalWidth > 0).length === 4",
        timeout=5000,
    )


def _wait_ready(page):
    page.wait_for_function("document.getElementById('player').readyState >= 2", timeout=10000)


def test_video_page_plays_seeks_and_draws_one_point_per_clip(page, built):
    out, _ = built
    data = _page_data(out / "videos" / "0001.html")
    page.goto((out / "videos" / "0001.html").as_uri())
    _wait_ready(page)
    points = page.get_attribute("polyline.curve", "points").split()
    assert len(points) == len(data["clips"]["t"]) == 8
    assert page.locator("#curve rect.truth").count() == 1
    page.keyboard.press(" ")  # a real key press: the user gesture browsers ask before playing
    page.wait_for_function("player.currentTime > 0.3", timeout=10000)  # it plays
    page.keyboard.press(" ")
    assert page.evaluate("player.paused")
    start = data["video"]["intervals"][0]["start_s"]
    page.evaluate("player.currentTime = 0")
    page.click('#curve rect.band[data-index="0"]')
    assert page.evaluate("player.currentTime") == pytest.approx(start, abs=1e-3)
    page.wait_for_function(
        "Math.abs(parseFloat(document.querySelector('.playhead').getAttribute('x1')) - "
        f"{start} / {data['video']['duration_s']} * document.getElementById('curve').width.baseVal.value) < 1"
    )
    # a click on the curve away from any band seeks to the start of the clip under it
    box = page.locator("#curve").bounding_box()
    page.mouse.click(box["x"] + box["width"] * (7.5 * 16 / 25) / data["video"]["duration_s"], box["y"] + 30)
    assert page.evaluate("player.currentTime") == pytest.approx(data["clips"]["t"][7], abs=1e-3)


def test_keys_step_through_intervals_and_the_proxy_plays(page, built):
    out, _ = built
    data = _page_data(out / "videos" / "0003.html")
    assert data["video"]["name"] == "legacy cam.avi" and data["media"]["kind"] == "proxy"
    starts = [iv["start_s"] for iv in data["video"]["intervals"]]
    page.goto((out / "videos" / "0003.html").as_uri())
    _wait_ready(page)
    assert page.evaluate("player.videoHeight") == 120 and page.evaluate("player.duration") == pytest.approx(
        6.4, abs=0.05
    )
    page.keyboard.press("n")
    assert page.evaluate("player.currentTime") == pytest.approx(starts[0], abs=1e-3)
    page.keyboard.press("n")
    assert page.evaluate("player.currentTime") == pytest.approx(starts[1], abs=1e-3)
    page.keyboard.press("p")
    assert page.evaluate("player.currentTime") == pytest.approx(starts[0], abs=1e-3)
    page.keyboard.press(" ")
    page.wait_for_function("player.currentTime > %f" % (starts[0] + 0.3), timeout=5000)
    page.keyboard.press(" ")


def test_verdicts_export_files_that_train_and_evaluate_read(page, built, videos, tmp_path):
    out, _ = built
    # alarm.mp4: its interval is a real anomaly
    page.goto((out / "videos" / "0001.html").as_uri())
    page.click('#intervals tr[data-index="0"] button.anomaly')
    assert page.text_content("#video-label") == "label: anomalous"
    # legacy cam.avi: both intervals are false alarms, by key
    page.goto((out / "videos" / "0003.html").as_uri())
    _wait_ready(page)
    for _ in range(2):
        page.keyboard.press("n")
        page.keyboard.press("f")
    assert page.text_content("#video-label") == "label: normal"
    # quiet.mp4: looked at, normal
    page.goto((out / "videos" / "0002.html").as_uri())
    page.click("#video-normal")
    page.goto((out / "index.html").as_uri())
    assert page.text_content("#verdict-counts") == "1 anomalous, 2 normal, 1 unreviewed."
    with page.expect_download() as dl:
        page.click("#export-labels")
    labels = tmp_path / "labels.csv"
    dl.value.save_as(labels)
    with page.expect_download() as dl:
        page.click("#export-annotations")
    annotations = tmp_path / "annotations.txt"
    dl.value.save_as(annotations)
    assert read_labels_csv(labels) == {"alarm": 1, "legacy cam": 0, "quiet": 0}
    interval = _page_data(out / "videos" / "0001.html")["video"]["intervals"][0]
    assert parse_annotations(annotations) == {"alarm": [(interval["start_frame"], interval["end_frame"])]}
    # the verdicts survive a reload (local storage) and count unflagged videos as normal when asked
    page.reload()
    page.check("#unflagged-normal")
    with page.expect_download() as dl:
        page.click("#export-labels")
    dl.value.save_as(tmp_path / "labels2.csv")
    assert read_labels_csv(tmp_path / "labels2.csv") == {"alarm": 1, "legacy cam": 0, "quiet": 0}

    # vadpipe train --labels takes the CSV (bare XD-layout features of these names), evaluate the annotations
    feats = tmp_path / "features"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for name in ("alarm", "legacy cam", "quiet"):
        np.save(feats / f"{name}__0.npy", rng.normal(size=(12, 1024)).astype(np.float32))
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "train",
            "--features",
            str(feats),
            "--labels",
            str(labels),
            "--run",
            str(run),
            "--recipe",
            "paper",
            "--epochs",
            "2",
            "--set",
            "holdout_fraction=0",
            "-q",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["videos_per_class"] == {"normal": 2, "anomalous": 1}, config["data"]
    result = runner.invoke(
        main, ["evaluate", "--run", str(run), "--features", str(feats), "--annotations", str(annotations), "-q"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
