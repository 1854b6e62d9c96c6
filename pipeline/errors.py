"""Typed errors shared by every stage; the CLI turns them into one-line messages and exit codes."""

__all__ = [
    "VadpipeError",
    "ConfigError",
    "DecodeError",
    "WeightsError",
    "CacheError",
    "DataError",
    "CheckpointError",
]


class VadpipeError(Exception):
    """Base of every error vadpipe raises on purpose: its message is shown without a traceback."""

    exit_code = 2


class ConfigError(VadpipeError, ValueError):
    """An option or setting that cannot work (bad value, conflicting flags)."""


class DecodeError(VadpipeError, ValueError):
    """A video that cannot be opened or decoded."""


class WeightsError(VadpipeError, RuntimeError):
    """The I3D weights are missing, cannot be fetched, or fail their hash check."""


class CacheError(VadpipeError, RuntimeError):
    """A feature cache entry is missing, corrupted, or cannot be written."""


class DataError(VadpipeError, ValueError):
    """Training or evaluation data that cannot be used as given (labels, shapes, NaNs)."""


class CheckpointError(VadpipeError, RuntimeError):
    """A run folder or checkpoint that is missing, corrupted or foreign."""
