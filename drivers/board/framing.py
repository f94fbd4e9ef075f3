"""Byte framing of the board link: COBS + CRC-32, one frame per command or reply.

A frame on the wire is ``COBS(body) + b"\\x00"``. The body is::

    offset  size  field
    0       1     version   (PROTOCOL_VERSION)
    1       1     opcode    (requests: op; replies: op | REPLY_BIT)
    2       2     seq       u16 little-endian, chosen by the host, echoed by the board
    4       1     status    0 in requests; the board's status code in replies
    5       2     length    u16 LE, number of payload bytes n
    7       n     payload
    7+n     4     crc32     u32 LE, zlib.crc32 of bytes [0, 7+n)

COBS (consistent overhead byte stuffing) removes every zero byte from the body, so the
single ``0x00`` delimiter can never occur inside a frame: a receiver that joins a stream in
the middle, or sees garbage, resynchronises at the next zero byte. The overhead is at most
one byte per 254 bytes of body plus one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from drivers.board.errors import FramingError

PROTOCOL_VERSION = 1
REPLY_BIT = 0x80
DELIMITER = b"\x00"
HEADER = struct.Struct("<BBHBH")
CRC = struct.Struct("<I")
MAX_PAYLOAD_LIMIT = 0xFFFF
"""The u16 length field's ceiling; the board reports its own (smaller) maximum."""


def cobs_encode(data: bytes) -> bytes:
    """Encode ``data`` so that the result contains no zero byte."""
    out = bytearray()
    for piece in bytes(data).split(b"\x00"):
        start = 0
        while len(piece) - start >= 0xFE:
            out.append(0xFF)
            out += piece[start : start + 0xFE]
            start += 0xFE
        out.append(len(piece) - start + 1)
        out += piece[start:]
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Invert :func:`cobs_encode`; raise :class:`FramingError` on a malformed block."""
    if b"\x00" in encoded:
        raise FramingError("COBS data contains a zero byte; the delimiter was not stripped")
    out = bytearray()
    i, n = 0, len(encoded)
    while i < n:
        code = encoded[i]
        end = i + code
        if end > n:
            raise FramingError(f"COBS block of {code - 1} bytes at offset {i} overruns {n} bytes")
        out += encoded[i + 1 : end]
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    """A decoded frame: header fields plus payload."""

    opcode: int
    seq: int
    status: int
    payload: bytes

    @property
    def is_reply(self) -> bool:
        return bool(self.opcode & REPLY_BIT)

    @property
    def command(self) -> int:
        """The command's opcode without the reply bit."""
        return self.opcode & ~REPLY_BIT & 0xFF


def encode_frame(opcode: int, seq: int, status: int, payload: bytes) -> bytes:
    """Build the wire bytes (COBS body + delimiter) of one frame."""
    if not 0 <= opcode <= 0xFF:
        raise FramingError(f"opcode {opcode} is not a byte")
    if not 0 <= seq <= 0xFFFF:
        raise FramingError(f"seq {seq} is not a u16; wrap it modulo 65536")
    if len(payload) > MAX_PAYLOAD_LIMIT:
        raise FramingError(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_LIMIT}; split the command"
        )
    body = HEADER.pack(PROTOCOL_VERSION, opcode, seq, status, len(payload)) + bytes(payload)
    body += CRC.pack(zlib.crc32(body))
    return cobs_encode(body) + DELIMITER


def decode_body(body: bytes) -> Frame:
    """Check and parse one de-stuffed frame body."""
    if len(body) < HEADER.size + CRC.size:
        raise FramingError(f"frame of {len(body)} bytes is shorter than header + CRC")
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    if zlib.crc32(body[: -CRC.size]) != crc:
        raise FramingError("CRC-32 mismatch")
    version, opcode, seq, status, length = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise FramingError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
    if length != len(body) - HEADER.size - CRC.size:
        raise FramingError(
            f"length field {length} disagrees with {len(body) - HEADER.size - CRC.size} payload bytes"
        )
    return Frame(opcode, seq, status, bytes(body[HEADER.size : -CRC.size]))


def decode_frame(wire: bytes) -> Frame:
    """Decode one frame's wire bytes (with or without the trailing delimiter)."""
    return decode_body(cobs_decode(wire.rstrip(DELIMITER)))


class Deframer:
    """Incremental receiver: feed arbitrary byte chunks, get complete frames.

    Garbage (bytes that do not decode into a valid frame) is counted and skipped; the
    receiver resynchronises at the next delimiter. ``max_frame_bytes`` bounds the buffer
    so a stream without delimiters cannot grow memory without limit.
    """

    def __init__(self, max_frame_bytes: int = 2 * MAX_PAYLOAD_LIMIT) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes
        self.bad_frames = 0
        self.overflows = 0

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        self._buf += data
        while True:
            end = self._buf.find(0)
            if end < 0:
                if len(self._buf) > self._max:
                    self._buf.clear()
                    self.overflows += 1
                return frames
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if not chunk:
                continue
            try:
                frames.append(decode_body(cobs_decode(chunk)))
            except FramingError:
                self.bad_frames += 1

    def clear(self) -> None:
        self._buf.clear()
