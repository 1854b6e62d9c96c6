"""A run's inputs: the video files under the paths given, walked once, and a writable cache folder.

``find_videos`` walks the inputs into ``FoundInputs``; a caller that needs to know what is there
before the run (detect: whether to load I3D at all) hands the same ``FoundInputs`` to
``extract_videos``, so the folders are not walked twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vadpipe.errors import CacheError, ConfigError

from .decode import VIDEO_EXTENSIONS
from .fileio import check_writable
from .results import VideoResult

__all__ = ["FoundInputs", "find_videos", "discover_inputs"]


@dataclass(frozen=True)
class FoundInputs:
    """The paths as given, the video files found under them (sorted), the missing paths as failures."""

    given: tuple[Path | str, ...]  # as passed: messages name them so
    sources: tuple[Path, ...]
    missing: tuple[VideoResult, ...]


def find_videos(inputs: Iterable[Path | str]) -> FoundInputs:
    """Files as given, folders searched recursively for video extensions; missing paths as failures."""
    given = tuple(inputs)
    found: dict[Path, None] = {}
    missing = []
    for raw in given:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."):
                    found.setdefault(p.resolve(), None)
        elif path.is_file():
            found.setdefault(path.resolve(), None)
        else:
            missing.append(VideoResult(source=str(path), status="failed", error=f"{path}: no such file or folder"))
    return FoundInputs(given=given, sources=tuple(sorted(found)), missing=tuple(missing))


def discover_inputs(found: FoundInputs, out_dir: Path) -> tuple[list[Path], list[VideoResult]]:
    """A run's first step: the videos to do, the missing inputs, and a writable cache.

    The cache folder is checked before any network is loaded, so an unwritable one fails at once.
    """
    if not found.sources and not found.missing:
        raise ConfigError(
            f"no video files found in {_few_paths(found.given)} "
            f"(looked for {', '.join(sorted(VIDEO_EXTENSIONS)[:6])}, ...)"
        )
    _prepare_out_dir(Path(out_dir))
    return list(found.sources), list(found.missing)


def _few_paths(paths: Sequence[Path | str], limit: int = 3) -> str:
    names = [str(p) for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the cache folder and prove it is writable (one clear error instead of one per video)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_writable(out_dir)
    except OSError as exc:
        raise CacheError(f"cannot write into the output folder {out_dir}: {exc.strerror or exc}") from exc
