"""Extraction stage: video files -> per-clip I3D features cached on disk."""
