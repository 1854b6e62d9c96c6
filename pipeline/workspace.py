"""The one place that decides default file paths: the workspace folder and what lives in it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["workspace_dir", "features_dir", "runs_dir"]

_ENV = "VADPIPE_HOME"


def workspace_dir() -> Path:
    """``$VADPIPE_HOME`` if set, else ``./vadpipe-work`` (relative to the current directory)."""
    return Path(os.environ.get(_ENV) or "vadpipe-work")


def features_dir() -> Path:
    """Default feature cache written by ``vadpipe extract`` and read by ``vadpipe train``."""
    return workspace_dir() / "features"


def runs_dir() -> Path:
    """Default parent of training run folders (and of the ``latest`` pointer)."""
    return workspace_dir() / "runs"
