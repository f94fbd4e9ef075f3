"""Payload layouts: a fixed little-endian head plus raw arrays, packed and checked.

A :class:`Layout` is a :mod:`struct` head format with field names and :class:`ArraySpec`
arrays whose element counts (and, optionally, dtypes) follow from the head fields.
:func:`unpack` checks the payload length against the layout before any ``np.frombuffer``.
The command table that uses these is :mod:`drivers.board.protocol`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers import DeviceError


class Status(enum.IntEnum):
    """Reply status codes."""

    OK = 0
    BAD_OPCODE = 1
    BAD_PAYLOAD = 2
    BAD_REGION = 3
    WRONG_CHIP = 4
    LIMIT_EXCEEDED = 5
    DEVICE_ERROR = 6
    UNKNOWN_SESSION = 7
    BAD_FRAME = 8


NAK_OPCODE = 0x7F
"""Opcode of the board's NAK: a reply frame (``0x7F | 0x80``, seq 0, status BAD_FRAME, empty
payload) sent for every received frame that fails its CRC or COBS decoding, so the host
retransmits at once instead of waiting out its timeout."""


class PayloadError(DeviceError):
    """A payload does not match its declared layout or fails its validator."""

    def __init__(self, message: str, status: Status = Status.BAD_PAYLOAD) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ArraySpec:
    """A raw array following the head; ``count(head_fields)`` gives its element count.

    ``dtype="bits"`` is a bool array packed 8 per byte (little bit order).
    """

    name: str
    dtype: str | Callable[[Mapping[str, Any]], str]
    """A numpy dtype string, ``"bits"``, or a function of the head fields returning one."""
    count: Callable[[Mapping[str, Any]], int]

    def resolve(self, fields: Mapping[str, Any]) -> str:
        return self.dtype(fields) if callable(self.dtype) else self.dtype

    def nbytes(self, n: int, dtype: str) -> int:
        return (n + 7) // 8 if dtype == "bits" else n * np.dtype(dtype).itemsize


@dataclass(frozen=True)
class Layout:
    head: str
    fields: tuple[str, ...] = ()
    arrays: tuple[ArraySpec, ...] = ()
    struct_: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "struct_", struct.Struct(self.head))
        n_fields = len(self.struct_.unpack(bytes(self.struct_.size)))
        if n_fields != len(self.fields):
            raise ValueError(f"layout {self.head!r} has {n_fields} fields, names {self.fields}")


def pack(
    layout: Layout, fields: Mapping[str, Any], arrays: Mapping[str, Any] | None = None
) -> bytes:
    """Serialise head ``fields`` and raw ``arrays`` per ``layout`` (counts are checked)."""
    arrays = arrays or {}
    try:
        out = bytearray(layout.struct_.pack(*(fields[name] for name in layout.fields)))
    except (KeyError, struct.error) as exc:
        raise PayloadError(f"cannot pack head {layout.fields}: {exc}") from exc
    for spec in layout.arrays:
        n, dtype = spec.count(fields), spec.resolve(fields)
        arr = np.asarray(arrays[spec.name])
        if arr.size != n:
            raise PayloadError(f"array {spec.name!r} has {arr.size} elements, layout needs {n}")
        if dtype == "bits":
            out += np.packbits(arr.reshape(-1).astype(bool), bitorder="little").tobytes()
        else:
            out += np.ascontiguousarray(arr.reshape(-1), dtype=dtype).tobytes()
    return bytes(out)


def unpack(layout: Layout, payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a payload per ``layout``; lengths are checked before ``np.frombuffer``."""
    size = layout.struct_.size
    if len(payload) < size:
        raise PayloadError(f"payload of {len(payload)} bytes is shorter than its {size}-byte head")
    fields = dict(zip(layout.fields, layout.struct_.unpack_from(payload), strict=True))
    specs = [(spec, spec.count(fields), spec.resolve(fields)) for spec in layout.arrays]
    need = size + sum(spec.nbytes(n, dt) for spec, n, dt in specs)
    if len(payload) != need:
        raise PayloadError(f"payload has {len(payload)} bytes, layout {layout.fields} needs {need}")
    arrays: dict[str, np.ndarray] = {}
    offset = size
    for spec, n, dtype in specs:
        nbytes = spec.nbytes(n, dtype)
        raw = payload[offset : offset + nbytes]
        if dtype == "bits":
            bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
            arrays[spec.name] = bits[:n].astype(bool)
        else:
            arrays[spec.name] = np.frombuffer(raw, dtype=dtype, count=n)
        offset += nbytes
    return fields, arrays
