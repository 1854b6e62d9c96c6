"""TensorFlow checkpoint bundles (``model.ckpt.index`` + ``model.ckpt.data-*``), read without TensorFlow.

DeepMind released the I3D weights as TF checkpoints. The index is a LevelDB-format table
(uncompressed blocks here): the key ``""`` holds the bundle header, every other key is a
variable name whose value is a ``BundleEntryProto`` (dtype, shape, shard, byte offset and size
in the data file, masked crc32c of the bytes). Reading the index is enough to verify a weight
file tensor by tensor; reading the data file by those offsets gives the tensors themselves.
Only what these checkpoints use is supported: float32 tensors, one shard, no slices.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numpy as np

from vadpipe.errors import WeightsError

__all__ = ["IndexEntry", "masked_crc32c", "read_index", "parse_index", "read_tensors", "INDEX_SUFFIX", "DATA_SUFFIX"]

INDEX_SUFFIX = ".index"
DATA_SUFFIX = ".data-00000-of-00001"
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_DTYPES = {1: np.dtype("<f4")}  # TF DataType enum: DT_FLOAT = 1 (the only one the I3D checkpoints use)


def masked_crc32c(data: bytes | memoryview) -> int:
    """TensorFlow's masked crc32c: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True)
class IndexEntry:
    """One variable of a bundle: where its bytes lie in the data file and their checksum."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int

    @property
    def numpy_dtype(self) -> np.dtype:
        return _DTYPES[self.dtype]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as int, fixed32 as int, bytes as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        out.append((field, value))
    return out


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: field 2 = repeated Dim, whose field 1 is the size."""
    dims = []
    for field, value in _proto_fields(buf):
        if field == 2:
            sizes = [v for f, v in _proto_fields(value) if f == 1]
            dims.append(int(sizes[0]) if sizes else 0)
    return tuple(dims)


def _entry(name: str, value: bytes) -> IndexEntry:
    fields: dict[int, object] = {}
    for field, v in _proto_fields(value):
        if field == 7:
            raise ValueError(f"{name}: sliced tensors are not supported")
        fields[field] = v
    return IndexEntry(
        name=name,
        dtype=int(fields.get(1, 0)),
        shape=_shape(fields.get(2, b"")),
        shard_id=int(fields.get(3, 0)),
        offset=int(fields.get(4, 0)),
        size=int(fields.get(5, 0)),
        crc32c=int(fields.get(6, 0)),
    )


def _block(data: bytes, offset: int, size: int) -> bytes:
    """A table block's contents after checking its trailer (type byte 0 = uncompressed, masked crc32c)."""
    end = offset + size
    if end + 5 > len(data):
        raise ValueError("block runs past the end of the file")
    kind = data[end]
    (crc,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset : end + 1]) != crc:
        raise ValueError(f"block at {offset} fails its checksum")
    if kind != 0:
        raise ValueError(f"block at {offset} is compressed (type {kind}); only uncompressed tables are supported")
    return data[offset:end]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of a block (keys are prefix-compressed against the previous key)."""
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise ValueError("bad restart array")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        own, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + own + vlen > limit:
            raise ValueError("corrupt block entry")
        key = key[:shared] + block[pos : pos + own]
        pos += own
        entries.append((key, block[pos : pos + vlen]))
        pos += vlen
    return entries


def parse_index(data: bytes, *, where: str = "index") -> dict[str, IndexEntry]:
    """Variable name -> entry, from the bytes of a bundle's ``.index`` file."""
    try:
        if len(data) < _FOOTER_LEN:
            raise ValueError("shorter than a table footer")
        footer = data[-_FOOTER_LEN:]
        (magic,) = struct.unpack_from("<Q", footer, 40)
        if magic != _TABLE_MAGIC:
            raise ValueError("no LevelDB table magic number at the end")
        pos = 0
        _, pos = _varint(footer, pos)  # metaindex handle (unused: no filters)
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
        entries: dict[str, IndexEntry] = {}
        header = None
        for _, handle in _block_entries(_block(data, index_offset, index_size)):
            offset, p = _varint(handle, 0)
            size, _ = _varint(handle, p)
            for key, value in _block_entries(_block(data, offset, size)):
                if key == b"":
                    header = dict(_proto_fields(value))
                else:
                    name = key.decode()
                    entries[name] = _entry(name, value)
        if header is None:
            raise ValueError("no bundle header (empty key)")
        if int(header.get(1, 1)) != 1:
            raise ValueError(f"{header.get(1)} shards; only single-shard bundles are supported")
        if int(header.get(2, 0)) != 0:
            raise ValueError("big-endian bundle")
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise WeightsError(f"{where} is not a TensorFlow checkpoint index: {exc}") from None
    return entries


def read_index(path: Path) -> dict[str, IndexEntry]:
    return parse_index(Path(path).read_bytes(), where=str(path))


def read_tensors(prefix: Path) -> dict[str, np.ndarray]:
    """Every variable of the bundle ``prefix`` (``.../model.ckpt``), read by the index's offsets.

    Each tensor's bytes are checked against the index's crc32c here, so a truncated or damaged
    data file is refused naming the variable.
    """
    index_path = Path(str(prefix) + INDEX_SUFFIX)
    data_path = Path(str(prefix) + DATA_SUFFIX)
    if not data_path.is_file():
        raise WeightsError(f"{index_path} has no data file beside it: expected {data_path}")
    entries = read_index(index_path)
    out: dict[str, np.ndarray] = {}
    with open(data_path, "rb") as fh:
        for name, e in entries.items():
            if e.dtype not in _DTYPES:
                raise WeightsError(f"{index_path}: {name} has TF dtype {e.dtype}; only float32 is supported")
            fh.seek(e.offset)
            raw = fh.read(e.size)
            if len(raw) != e.size:
                raise WeightsError(f"{data_path} is truncated: {name} needs bytes {e.offset}..{e.offset + e.size}")
            if masked_crc32c(raw) != e.crc32c:
                raise WeightsError(f"{data_path}: the bytes of {name} do not match the crc32c in {index_path.name}")
            out[name] = np.frombuffer(raw, dtype=e.numpy_dtype).reshape(e.shape).copy()
    return out
