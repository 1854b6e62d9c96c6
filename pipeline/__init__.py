"""vadpipe: weakly supervised video anomaly detection, from raw videos to anomalous intervals.

Stages (one import namespace, data flows one way through files on disk):
``vadpipe.extract`` (video -> I3D features), ``vadpipe.model`` (training),
``vadpipe.postprocess`` (scores, proposals, metrics), and this package (CLI, orchestration).
The root package stays import-light: stages may use only the leaf modules
``vadpipe.errors`` and ``vadpipe._version`` from it.
"""

from vadpipe._version import __version__

__all__ = ["__version__"]
