"""A static HTML report to review detections in a browser and turn verdicts into labels.

`build_report` writes a folder (``index.html``, one page per video, thumbnails, H.264 proxies of
what browsers cannot play, scripts and styles) that opens from the file system with no server
and no network. The pages export the reviewer's verdicts as a labels CSV for
``vadpipe train --labels`` and an annotations file for ``--annotations``.

The names are re-exported lazily (as in `vadpipe.postprocess`): the CLI reads `PROXY_MODES`
for its options, and every command would otherwise pay for importing torch and scikit-learn
through the report builder before doing anything.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ReportOptions": "build",
    "ReportResult": "build",
    "build_report": "build",
    "PROXY_MODES": "media",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
