"""Lossless packing of a frame of MVM output codes (the MVM_PACKED replies, firmware 1.4).

Frame of reference, per column ("bit packing" as in columnar stores): for a reply of
``batch × cols`` signed ADC codes the board sends, per column ``c``, its minimum
``ref[c]`` (in the code's own dtype) and the bit width ``width[c]`` of the column's range,
``bit_length(max − min)`` (0 for a constant column, at most ``8·code_bytes``); then every
code as ``code − ref[c]`` in ``width[c]`` bits. Records are row-major: row ``b`` is one
record of ``sum(width)`` bits, column 0 first, each value least significant bit first; the
records follow each other without padding, and the bit stream fills bytes from their least
significant bit (``np.packbits(..., bitorder="little")``), zero-padded to a whole byte.
Bit ``j`` of the value of row ``b``, column ``c`` is stream bit ``b·R + S[c] + j`` with
``R = sum(width)`` and ``S[c] = sum(width[:c])``.

A microcontroller does this in two passes over the frame buffer it already holds (min/max
per column, then shift-and-or into the output), with no tables. When packing would not
be smaller than the raw codes, the board sends them raw (``packing = 0``, the MVM reply's
bytes), so a packed reply is never longer than MVM's codes plus its 3 extra head bytes.

Pure numpy; both the emulated firmware (:func:`encode`) and the host (:func:`decode`) use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drivers.board.layout import PayloadError

RAW = 0
"""``packing`` value: the codes follow raw, as in the MVM reply (``code_bytes`` each)."""
FRAME_OF_REFERENCE = 1
"""``packing`` value: per-column reference and bit width, then the bit-packed records."""

_CODE_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("i1"), 2: np.dtype("<i2"), 4: np.dtype("<i4")}
_VALUE_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("u1"),
    2: np.dtype("<u2"),
    4: np.dtype("<u4"),
}


def _dtypes(code_bytes: int) -> tuple[np.dtype[Any], np.dtype[Any]]:
    try:
        return _CODE_DTYPES[code_bytes], _VALUE_DTYPES[code_bytes]
    except KeyError:
        raise PayloadError(f"MVM code width {code_bytes} bytes is not 1, 2 or 4") from None


def encode(codes: np.ndarray, code_bytes: int) -> tuple[int, np.ndarray, np.ndarray, bytes]:
    """``(packing, ref, width, data)`` for a ``(batch, cols)`` array of signed codes that fit
    ``code_bytes``; ``ref``/``width`` are empty when ``packing`` is :data:`RAW`."""
    code_dt, value_dt = _dtypes(code_bytes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (batch, cols), got shape {codes.shape}")
    batch, cols = codes.shape
    wide = codes.astype(np.int64)
    info = np.iinfo(code_dt)
    if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise ValueError(f"codes outside {code_bytes}-byte range [{info.min}, {info.max}]")
    raw = wide.astype(code_dt).tobytes()
    if wide.size == 0:
        return RAW, np.empty(0, code_dt), np.empty(0, np.uint8), raw
    lo = wide.min(axis=0)
    span = (wide.max(axis=0) - lo).astype(np.uint64)
    # bit_length of the span, exactly (no float log): count the powers of two <= span
    powers = np.uint64(1) << np.arange(8 * code_bytes, dtype=np.uint64)
    width = (span[:, None] >= powers).sum(axis=1).astype(np.uint8)
    row_bits = int(width.sum(dtype=np.int64))
    data_bytes = (batch * row_bits + 7) // 8
    if cols * (code_bytes + 1) + data_bytes >= len(raw):
        return RAW, np.empty(0, code_dt), np.empty(0, np.uint8), raw
    values = (wide - lo).astype(value_dt)  # in [0, 2^width)
    bits = np.unpackbits(
        values.view(np.uint8).reshape(batch, cols, code_bytes), axis=-1, bitorder="little"
    )
    keep = np.arange(8 * code_bytes)[None, :] < width[:, None]  # (cols, 8·code_bytes)
    stream = bits[:, keep]  # (batch, row_bits): row-major records, columns in order, LSB first
    data = np.packbits(stream.reshape(-1), bitorder="little").tobytes()
    return FRAME_OF_REFERENCE, lo.astype(code_dt), width, data


def decode(
    packing: int,
    batch: int,
    cols: int,
    code_bytes: int,
    ref: np.ndarray,
    width: np.ndarray,
    data: bytes | np.ndarray,
) -> np.ndarray:
    """The ``(batch, cols)`` codes (the code dtype) of a packed MVM reply; a reply that is
    not a valid packing (widths, lengths, padding, range) raises :class:`PayloadError`."""
    code_dt, value_dt = _dtypes(code_bytes)
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray) else data
    if packing == RAW:
        if buf.size != batch * cols * code_bytes:
            raise PayloadError(
                f"raw MVM codes: {buf.size} bytes for {batch}x{cols} codes of {code_bytes} bytes"
            )
        return buf.view(code_dt).reshape(batch, cols)
    if packing != FRAME_OF_REFERENCE:
        raise PayloadError(f"unknown MVM code packing {packing}")
    if ref.size != cols or width.size != cols:
        raise PayloadError(
            f"packed MVM reply has {ref.size} refs, {width.size} widths for {cols} cols"
        )
    width = width.astype(np.int64)
    if width.size and int(width.max()) > 8 * code_bytes:
        raise PayloadError(f"packed MVM width {int(width.max())} > {8 * code_bytes} bits")
    row_bits = int(width.sum())
    n_bits = batch * row_bits
    if buf.size != (n_bits + 7) // 8:
        raise PayloadError(
            f"packed MVM data has {buf.size} bytes, {batch} records of {row_bits} bits need "
            f"{(n_bits + 7) // 8}"
        )
    stream = np.unpackbits(buf, bitorder="little")
    if stream[n_bits:].any():
        raise PayloadError("packed MVM data has non-zero padding bits")
    keep = np.arange(8 * code_bytes)[None, :] < width[:, None]
    bits = np.zeros((batch, cols, 8 * code_bytes), np.uint8)
    bits[:, keep] = stream[:n_bits].reshape(batch, row_bits)
    values = np.packbits(bits, axis=-1, bitorder="little").view(value_dt)[..., 0]
    wide = ref.astype(np.int64)[None, :] + values
    info = np.iinfo(code_dt)
    if wide.size and int(wide.max()) > info.max:
        raise PayloadError(f"packed MVM code {int(wide.max())} exceeds the {code_bytes}-byte range")
    return wide.astype(code_dt)
