"""Post-processing: per-clip scores -> frame curves, proposals, intervals, metrics and plots.

Scoring a video with a model is ``vadpipe.model.scoring``. Each name is imported from the module
that owns it (this package re-exports nothing, so importing it pulls in neither torch nor
matplotlib): ``proposals`` (interpolation and runs above a threshold), ``frame_intervals`` (a
curve -> the intervals of one video), ``intervals`` (the intervals JSON document), ``metrics``
(Table 1 levels and protocols), ``decisions`` (what an operating point reports, and its
metrics), ``calibration`` (operating points and score calibration chosen on held-out videos),
``reliability`` (how trustworthy those are), ``evaluate`` (a run over a feature folder),
``events`` and ``online`` (live scoring), ``ood`` (the outside-footage judgement), ``plot`` and
``report`` (figures and the review folder).
"""
