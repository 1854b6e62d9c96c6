"""Checks of a loaded JSON object's keys and value types, with errors that name the bad key.

Every stage reads JSON files written by an earlier one (intervals documents, run configs); this
is the one place that says how a key is checked, so each message reads alike
(``videos[0].fps must be a number, got 'x'``). It lives in the first stage so every later one
can import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vadpipe.errors import DataError, VadpipeError

__all__ = ["require", "unit", "optional_unit"]


def require(
    obj: Any, key: str, kind: type, where: str, *, error: type[VadpipeError] = DataError, default: Any = ...
) -> Any:
    """``obj[key]`` checked to be a ``kind`` (``float``: any finite number; ``bool`` never counts as a number).

    ``where`` names ``obj`` in messages (``videos[0]``). A missing key is an error unless
    ``default`` is given, which is then returned as it is.
    """
    if not isinstance(obj, Mapping):
        raise error(f"{where} must be an object, got {type(obj).__name__}")
    if key not in obj:
        if default is not ...:
            return default
        raise error(f"{where}.{key} is missing")
    value = obj[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{where}.{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise error(f"{where}.{key} must be finite, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, kind):
        raise error(f"{where}.{key} must be {kind.__name__}, got {value!r}")
    return value


def unit(obj: Any, key: str, where: str, *, error: type[VadpipeError] = DataError) -> float:
    """``obj[key]``, a number in [0, 1]."""
    value = require(obj, key, float, where, error=error)
    if not 0.0 <= value <= 1.0:
        raise error(f"{where}.{key} must lie in [0, 1], got {value}")
    return value


def optional_unit(obj: Any, key: str, where: str, *, error: type[VadpipeError] = DataError) -> float | None:
    """``obj[key]``: absent or null (None), else a number in [0, 1]."""
    if isinstance(obj, Mapping) and obj.get(key) is None:
        return None
    return unit(obj, key, where, error=error)
