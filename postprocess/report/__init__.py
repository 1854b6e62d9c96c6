"""A static HTML report to review detections in a browser and turn verdicts into labels.

`build_report` writes a folder (``index.html``, one page per video, thumbnails, H.264 proxies of
what browsers cannot play, scripts and styles) that opens from the file system with no server
and no network. The pages export the reviewer's verdicts as a labels CSV for
``vadpipe train --labels`` and an annotations file for ``--annotations``.
"""

from vadpipe.postprocess.report.build import ReportOptions, ReportResult, build_report, load_intervals
from vadpipe.postprocess.report.media import PROXY_MODES

__all__ = ["PROXY_MODES", "ReportOptions", "ReportResult", "build_report", "load_intervals"]
