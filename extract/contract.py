"""Checks of a loaded JSON object's keys and value types, with errors that name the bad key.

Every stage reads JSON files written by an earlier one (cache records, run configs, intervals
documents); this is the one place that says how a key is checked, so each message reads alike
(``videos[0].fps must be a number, got 'x'``; a file checked against its frozen dataclasses:
``walk.json: field 'clips.count' must be an integer, got '3'``). Each caller passes its own error
class and the ``where`` label that names the file or object. It lives in the first stage so every
later one can import it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from vadpipe.errors import DataError, VadpipeError

__all__ = ["require", "unit", "optional_unit", "section", "dataclass_fields", "short"]


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def require(
    obj: Any, key: str, kind: type, where: str, *, error: type[VadpipeError] = DataError, default: Any = ...
) -> Any:
    """``obj[key]`` checked to be a ``kind`` (``float``: any finite number; ``bool`` never counts as a number).

    ``where`` names ``obj`` in messages (``videos[0]``). A missing key is an error unless
    ``default`` is given, which is then returned as it is.
    """
    value = _get(obj, key, where, error, default)
    if key not in obj:
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{where}.{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise error(f"{where}.{key} must be finite, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, kind):
        raise error(f"{where}.{key} must be {kind.__name__}, got {value!r}")
    return value


def unit(obj: Any, key: str, where: str, *, error: type[VadpipeError] = DataError, default: Any = ...) -> float:
    """``obj[key]``, a finite number in [0, 1] (``default``, as it is, when the key is absent and one is given)."""
    value = _get(obj, key, where, error, default)
    if key not in obj:
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not math.isfinite(value):
        raise error(f"{where}.{key} must be finite, got {value!r}")
    if not number or not 0.0 <= value <= 1.0:
        raise error(f"{where}.{key} must lie in [0, 1], got {value!r}")
    return value


def _get(obj: Any, key: str, where: str, error: type[VadpipeError], default: Any) -> Any:
    """``obj[key]``, or ``default`` when it is absent and given."""
    if not isinstance(obj, Mapping):
        raise error(f"{where} must be an object, got {type(obj).__name__}")
    if key not in obj:
        if default is not ...:
            return default
        raise error(f"{where}.{key} is missing")
    return obj[key]


def optional_unit(obj: Any, key: str, where: str, *, error: type[VadpipeError] = DataError) -> float | None:
    """``obj[key]``: absent or null (None), else a number in [0, 1]."""
    if isinstance(obj, Mapping) and obj.get(key) is None:
        return None
    return unit(obj, key, where, error=error)


def section(
    obj: Mapping[str, Any], key: str, where: str, *, error: type[VadpipeError] = DataError, prefix: str = ""
) -> Mapping[str, Any] | None:
    """``obj[key]``: absent or null (None), else an object, kept as it is.

    Named as a field of the file ``where`` (``c.json: field 'operating_point.video_calibration'``),
    ``prefix`` being the path of ``obj`` in it.
    """
    value = obj.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise error(f"{where}: field {prefix + key!r} must be an object or null, got {short(value)}")
    return value


# --------------------------------------------------------------------------- dataclass records
#
# A file whose whole layout is a tree of frozen dataclasses (the cache record) is checked from
# their field annotations: ``int``, ``float`` (finite), ``str``, ``Mapping[str, Any]`` (kept as
# a read-only copy), ``tuple[X, ...]`` (a list), a nested dataclass named in ``nested``, each
# possibly ``| None``.

_NUMBER = (int, float)
_OK = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v),
    "str": lambda v: isinstance(v, str),
    "Mapping[str, Any]": lambda v: isinstance(v, dict),
}
_WHAT = {"Mapping[str, Any]": "an object", "float": "a finite number", "int": "an integer", "str": "a string"}


def dataclass_fields(
    cls: type,
    data: Any,
    *,
    where: str,
    error: type[VadpipeError],
    nested: Mapping[str, type],
    prefix: str = "",
) -> Any:
    """An instance of the dataclass ``cls`` from ``data``; fields with a default may be absent.

    Unknown keys are refused; ``error`` names ``where`` and the dotted path of the first bad field
    (``where: field 'clips.count' is missing``). ``nested`` maps an annotation to its dataclass.
    """
    label = prefix.rstrip(".") or "the record"
    if not isinstance(data, dict):
        raise error(f"{where}: {label!r} must be an object, got {short(data)}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise error(f"{where}: unknown field {prefix + unknown[0]!r}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is not dataclasses.MISSING:
                continue
            raise error(f"{where}: field {prefix + f.name!r} is missing")
        values[f.name] = _check(data[f.name], f.type, prefix + f.name, where, error, nested)
    return cls(**values)


def _check(
    value: Any, annotation: str, path: str, where: str, error: type[VadpipeError], nested: Mapping[str, type]
) -> Any:
    """``value`` converted to the field's frozen type, or ``error`` naming ``path``."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return None
    inner = nested.get(base)
    if inner is not None:
        return dataclass_fields(inner, value, where=where, error=error, nested=nested, prefix=path + ".")
    if base.startswith("tuple["):
        item = base[len("tuple[") : -len(", ...]")]
        if not isinstance(value, list):
            raise error(f"{where}: field {path!r} must be a list, got {short(value)}")
        return tuple(_check(v, item, f"{path}[{i}]", where, error, nested) for i, v in enumerate(value))
    if not _OK[base](value):
        raise error(
            f"{where}: field {path!r} must be {_WHAT[base]}{' or null' if optional else ''}, got {short(value)}"
        )
    return MappingProxyType(copy.deepcopy(value)) if isinstance(value, dict) else value
