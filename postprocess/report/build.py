"""Build the review folder: an index page, one page per video, thumbnails, proxies, assets.

Why a static folder: a reviewer double-clicks ``index.html`` and works; nothing to serve, no
network. Browsers refuse ``fetch()`` of ``file://`` JSON, so each page carries its data inline
(``<script type="application/json">``) and the scripts are plain files beside it. Verdicts live in
the browser's local storage under a key derived from the report folder, so rebuilding the same
folder (e.g. after a new `vadpipe detect`) keeps them.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vadpipe.errors import ConfigError, DecodeError
from vadpipe.extract.fileio import atomic_write_text
from vadpipe.model.labels import parse_annotations
from vadpipe.postprocess.intervals import Interval, IntervalsDocument, VideoIntervals
from vadpipe.postprocess.report.media import PROXY_MODES, make_proxy, make_thumbnails, probe_playability

__all__ = ["ReportOptions", "ReportResult", "build_report", "interval_peak_s"]

ASSETS = ("report.css", "common.js", "index.js", "video.js")
_MEDIA_VERSION = "1"  # part of proxy/thumbnail names: bump when their encoding changes


@dataclass(frozen=True)
class ReportOptions:
    """How to build a report.

    Attributes:
        proxy: ``auto`` (an H.264 proxy for what browsers do not play), ``always`` or ``never``.
        copy_sources: copy the source files into the folder instead of linking them, so the
            folder can be moved or sent on its own.
        annotations: ground truth to draw (XD-Violence ``annotations.txt``, source frames).
        title: shown on every page [default: the intervals file's name].
        sources_root: folder relative ``source`` paths are resolved against, when they are not
            found relative to the working directory [default: the intervals file's folder].
    """

    proxy: str = "auto"
    copy_sources: bool = False
    annotations: Path | None = None
    title: str | None = None
    sources_root: Path | None = None

    def __post_init__(self) -> None:
        if self.proxy not in PROXY_MODES:
            raise ConfigError(f"proxy must be one of {', '.join(PROXY_MODES)}, got {self.proxy!r}")


@dataclass(frozen=True)
class ReportResult:
    """What was built: the index page, counts, and one line per video that lost something."""

    index: Path
    n_videos: int
    n_proxies: int
    n_thumbnails: int
    problems: tuple[str, ...] = field(default=())


def _clip_seconds(video: VideoIntervals) -> float:
    return video.clip_len / video.fps


def interval_peak_s(video: VideoIntervals, interval: Interval) -> float:
    """Time of the interval's highest weighted T-CAM: the middle of its best clip, kept inside."""
    half = _clip_seconds(video) / 2
    inside = [c for c in video.clips if c.start_s + half >= interval.start_s and c.start_s + half < interval.end_s]
    if not inside:
        inside = [c for c in video.clips if c.start_s < interval.end_s] or list(video.clips[:1])
    if not inside:
        return float(interval.start_s)
    best = max(inside, key=lambda c: c.wtcam)
    return float(min(max(best.start_s + half, interval.start_s), max(interval.end_s - 1e-3, 0.0)))


def _url(target: Path, page_dir: Path) -> str:
    """A relative URL from a page's folder to a file (quoted: names may hold spaces or '#')."""
    return quote(Path(os.path.relpath(target, page_dir)).as_posix())


def _json_for_html(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _page(*, title: str, kind: str, data: Any, root: str) -> str:
    scripts = "".join(f'<script src="{root}assets/{name}"></script>' for name in ("common.js", f"{kind}.js"))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f'<link rel="stylesheet" href="{root}assets/report.css"></head>\n'
        f'<body data-page="{kind}"><div id="app"><noscript>This report needs JavaScript.</noscript></div>\n'
        f'<script id="report-data" type="application/json">{_json_for_html(data)}</script>\n'
        f"{scripts}</body></html>\n"
    )


def _stamp(path: Path) -> str:
    st = path.stat()
    text = f"{_MEDIA_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _safe(name: str) -> str:
    kept = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return kept[:60] or "video"


def _resolve(source: str, options: ReportOptions, doc_dir: Path | None) -> Path | None:
    path = Path(source)
    candidates = [path]
    if not path.is_absolute():
        for base in (options.sources_root, doc_dir):
            if base is not None:
                candidates.append(base / path)
    return next((c for c in candidates if c.is_file()), None)


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _truth_seconds(video: VideoIntervals, frames: list[tuple[int, int]]) -> list[list[float]]:
    """Ground-truth frame spans in seconds (frame k at k * duration / n_frames, clipped to the video)."""
    n, duration = video.n_frames, video.duration_s
    if n <= 0:
        return []
    per_frame = duration / n
    return [[round(s * per_frame, 4), round(min(e, n) * per_frame, 4)] for s, e in frames if s < n]


def _progress(total: int, enabled: bool) -> Iterator:
    """Yields an ``advance(description)`` callable; a rich bar on stderr when enabled."""
    if not enabled:
        yield lambda _description: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("report"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("", total=total)
        yield lambda description: bar.update(task, advance=1, description=description)


def build_report(
    doc: IntervalsDocument,
    out: Path,
    *,
    options: ReportOptions = ReportOptions(),
    doc_path: Path | None = None,
    progress: bool = False,
) -> ReportResult:
    """Write the review folder ``out`` for a validated intervals document.

    A missing or undecodable source costs its video the player or thumbnails (one line in
    ``problems``), never the report. Proxies and thumbnails already in ``out`` for an unchanged
    source are reused, so rebuilding after a new detection only makes what changed.

    Raises:
        DataError: a bad annotations file.
        ConfigError: ``out`` exists and is not a folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    truth = parse_annotations(options.annotations) if options.annotations is not None else None
    doc_dir = doc_path.resolve().parent if doc_path is not None else None
    for sub in ("assets", "videos", "media", "thumbs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    static = resources.files("vadpipe.postprocess.report") / "static"
    for name in ASSETS:
        atomic_write_text(out / "assets" / name, (static / name).read_text(encoding="utf-8"))

    op = doc.operating_point
    title = options.title or (doc_path.name if doc_path is not None else "vadpipe report")
    storage_key = "vadpipe-report:" + hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]
    meta = {
        "title": title,
        "storage_key": storage_key,
        "threshold": op.threshold,
        "video_threshold": op.video_threshold,
        "method": op.method,
        "model": doc.model,
        "has_truth": truth is not None,
    }
    videos = doc.videos
    damaged = {d.source: d.damage for d in doc.damaged}
    problems: list[str] = []
    entries: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    n_proxies = n_thumbs = 0
    page_dir = out / "videos"
    progress_bar = _progress(len(videos), progress)
    advance = next(progress_bar)
    for i, video in enumerate(videos):
        source = video.source
        vid = f"{i + 1:04d}"
        stem = Path(source).stem
        path = _resolve(source, options, doc_dir)
        intervals = [{**asdict(iv), "peak_s": round(interval_peak_s(video, iv), 4)} for iv in video.intervals]
        media: dict[str, Any] = {"src": None, "kind": "missing", "note": None, "source_href": None}
        thumbs: list[str | None] = []
        if path is None:
            media["note"] = f"source not found: {source}"
            problems.append(f"{source}: source not found; its page has no player and no thumbnails")
        else:
            stamp = _stamp(path)
            try:
                if options.copy_sources:  # the folder then stands on its own
                    linked = out / "media" / f"{vid}-{stamp}-{_safe(path.name)}"
                    if not linked.is_file():
                        _copy_atomic(path, linked)
                else:
                    linked = path.resolve()
                media["source_href"] = _url(linked, page_dir)
                play = probe_playability(path)
                want_proxy = options.proxy == "always" or (options.proxy == "auto" and not play.native)
                media["note"] = play.reason
                if want_proxy:
                    proxy = out / "media" / f"{vid}-{_safe(stem)}-{stamp}.mp4"
                    if not proxy.is_file():
                        make_proxy(path, proxy)
                    n_proxies += 1
                    media.update(src=_url(proxy, page_dir), kind="proxy")
                else:
                    media.update(src=media["source_href"], kind="copy" if options.copy_sources else "source")
                    if not play.native:
                        problems.append(f"{source}: {play.reason}; rebuild with --proxy auto to play it")
            except (DecodeError, OSError) as exc:
                media.update(src=None, kind="missing", note=f"cannot play: {exc}")
                problems.append(f"{source}: no player: {exc}")
            peaks = [iv["peak_s"] for iv in intervals]
            if not peaks and video.clips:  # unflagged: its most suspicious moment
                best = max(video.clips, key=lambda c: c.wtcam)
                peaks = [best.start_s + _clip_seconds(video) / 2]
            targets = [out / "thumbs" / f"{vid}-{k}-{stamp}-{int(t * 1000)}.jpg" for k, t in enumerate(peaks)]
            todo = [(t, p) for t, p in zip(peaks, targets) if not p.is_file()]
            try:
                if todo:
                    make_thumbnails(path, [t for t, _ in todo], [p for _, p in todo])
                thumbs = [_url(p, out) for p in targets]
                n_thumbs += len(targets)
            except (DecodeError, OSError) as exc:
                problems.append(f"{source}: no thumbnails: {exc}")
        gt = None
        if truth is not None:
            gt = _truth_seconds(video, truth.get(stem, []))
        clips = video.clips
        entry = {
            "id": vid,
            "source": source,
            "name": Path(source).name,
            "stem": stem,
            "page": f"videos/{vid}.html",
            "video_score": video.video_score,
            "video_probability": video.video_probability,
            "duration_s": video.duration_s,
            "n_frames": video.n_frames,
            "n_intervals": len(intervals),
            "peak": max((iv["score"] for iv in intervals), default=None),
            "intervals": [
                {k: iv[k] for k in ("start_frame", "end_frame", "start_s", "end_s", "score", "peak_s")}
                for iv in intervals
            ],
            "thumbs": thumbs,
            "damaged": damaged.get(source),
            "media_kind": media["kind"],
            "truth": None if gt is None else len(gt),
        }
        entries.append(entry)
        pages.append(
            {
                "video": {
                    **entry,
                    "intervals": intervals,
                    "fps": video.fps,
                    "clip_len": video.clip_len,
                    "clip_s": _clip_seconds(video),
                },
                "clips": {
                    "t": [round(c.start_s, 4) for c in clips],
                    "wtcam": [round(c.wtcam, 5) for c in clips],
                    "attention": [round(c.attention, 5) for c in clips],
                },
                "truth": gt,
                "media": media,
            }
        )
        advance(Path(source).name)
    progress_bar.close()

    for i, page in enumerate(pages):
        page["report"] = meta
        page["nav"] = {
            "index": "../index.html",
            "prev": f"{pages[i - 1]['video']['id']}.html" if i > 0 else None,
            "next": f"{pages[i + 1]['video']['id']}.html" if i + 1 < len(pages) else None,
        }
        atomic_write_text(
            page_dir / f"{page['video']['id']}.html",
            _page(title=f"{page['video']['name']} - {title}", kind="video", data=page, root="../"),
        )
    written = {f"{page['video']['id']}.html" for page in pages}
    for stale in page_dir.glob("*.html"):  # pages of videos an earlier build listed
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    index = {
        "report": meta,
        "videos": entries,
        "not_scored": [asdict(n) for n in doc.not_scored],
        "damaged": [asdict(d) for d in doc.damaged],
        "problems": problems,
    }
    index_path = out / "index.html"
    atomic_write_text(index_path, _page(title=title, kind="index", data=index, root=""))
    return ReportResult(
        index=index_path, n_videos=len(entries), n_proxies=n_proxies, n_thumbnails=n_thumbs, problems=tuple(problems)
    )
