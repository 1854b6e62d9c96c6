"""Test-side writer of TensorFlow checkpoint bundles (LevelDB-table index + data file).

Written independently of vadpipe's reader from the format's description, so that a round trip
through both checks the reader rather than repeating it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import crc32c
import numpy as np

MAGIC = 0xDB4775248B80FB57


def _mask(data: bytes) -> int:
    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def entry_proto(shape: tuple[int, ...], offset: int, size: int, crc: int, *, dtype: int = 1) -> bytes:
    dims = b"".join(_field_bytes(2, _field_varint(1, d)) for d in shape)
    out = _field_varint(1, dtype) + _field_bytes(2, dims)
    if offset:
        out += _field_varint(4, offset)
    return out + _field_varint(5, size) + _varint(6 << 3 | 5) + struct.pack("<I", crc)


def _block(entries: list[tuple[bytes, bytes]], restart_every: int = 16) -> bytes:
    body, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(body))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        body += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        last = key
    restarts = restarts or [0]
    body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(body)


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", _mask(block + b"\x00"))


def index_bytes(entries: Mapping[str, tuple[tuple[int, ...], int, int, int]]) -> bytes:
    """A bundle index: name -> (shape, offset, size, masked crc32c); header = one shard, little-endian."""
    header = _field_varint(1, 1) + _field_bytes(3, _field_varint(1, 1))
    items = [(b"", header)] + sorted((k.encode(), entry_proto(*v)) for k, v in entries.items())
    data = _with_trailer(_block(items))
    meta = _with_trailer(_block([]))
    index = _with_trailer(_block([(items[-1][0], _varint(0) + _varint(len(data) - 5))], restart_every=1))
    meta_at, index_at = len(data), len(data) + len(meta)
    handles = _varint(meta_at) + _varint(len(meta) - 5) + _varint(index_at) + _varint(len(index) - 5)
    footer = handles.ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
    return data + meta + index + footer


def write_bundle(
    prefix: Path, tensors: Mapping[str, np.ndarray], layout: Mapping[str, tuple[int, int]] | None = None
) -> Path:
    """Write ``prefix.index`` and ``prefix.data-00000-of-00001``.

    ``layout``: name -> (offset, size) to place each tensor where a real index says; default:
    packed in name order.
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if layout is None:
        layout, pos = {}, 0
        for name in sorted(tensors):
            layout[name] = (pos, tensors[name].nbytes)
            pos += tensors[name].nbytes
    end = max(o + s for o, s in layout.values())
    data = bytearray(end)
    entries = {}
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        offset, size = layout[name]
        assert size == len(raw), (name, size, len(raw))
        data[offset : offset + size] = raw
        entries[name] = (tuple(array.shape), offset, size, _mask(raw))
    Path(str(prefix) + ".data-00000-of-00001").write_bytes(bytes(data))
    Path(str(prefix) + ".index").write_bytes(index_bytes(entries))
    return prefix
