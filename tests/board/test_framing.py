"""Wire format: COBS + CRC-32 framing and the command table's pack/unpack (no I/O)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.board import protocol as P
from drivers.board.errors import FramingError
from drivers.board.framing import (
    REPLY_BIT,
    Deframer,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
)


@given(st.binary(max_size=2000))
@settings(deadline=None)
def test_cobs_round_trip_and_no_zero(data: bytes) -> None:
    enc = cobs_encode(data)
    assert b"\x00" not in enc
    assert cobs_decode(enc) == data
    assert len(enc) <= len(data) + len(data) // 254 + 1


def test_cobs_known_vectors() -> None:
    # Standard COBS examples (Cheshire & Baker 1999).
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"


@given(
    opcode=st.integers(0, 255),
    seq=st.integers(0, 0xFFFF),
    status=st.integers(0, 255),
    payload=st.binary(max_size=3000),
)
@settings(max_examples=200, deadline=None)
def test_frame_round_trip(opcode: int, seq: int, status: int, payload: bytes) -> None:
    wire = encode_frame(opcode, seq, status, payload)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    frame = decode_frame(wire)
    assert (frame.opcode, frame.seq, frame.status, frame.payload) == (opcode, seq, status, payload)


def test_exact_bytes_of_a_status_request() -> None:
    """Pins the wire format: header <BBHBH, payload, CRC-32 LE, COBS, 0x00."""
    body = bytes([1, 0x08, 0x34, 0x12, 0, 0, 0])
    body += zlib.crc32(body).to_bytes(4, "little")
    expected = cobs_encode(body) + b"\x00"
    assert encode_frame(P.STATUS.opcode, 0x1234, 0, b"") == expected
    # version 1, opcode 8, seq 0x1234 LE, then status 0 and length 0 become COBS codes.
    assert expected[:7] == bytes([0x05, 0x01, 0x08, 0x34, 0x12, 0x01, 0x01])


@given(st.binary(max_size=500), st.integers(0, 0xFFFF), st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_deframer_resyncs_after_garbage(garbage: bytes, seq: int, payload: bytes) -> None:
    wire = encode_frame(P.READ.opcode | REPLY_BIT, seq, 0, payload)
    d = Deframer()
    frames = []
    # Garbage, then a delimiter (the line resynchronises there), then a good frame split
    # into arbitrary chunks.
    for chunk in (garbage, b"\x00", wire[:3], wire[3:]):
        frames += d.feed(chunk)
    assert frames[-1].seq == seq and frames[-1].payload == payload


def test_crc_catches_every_single_byte_corruption() -> None:
    wire = encode_frame(P.PULSE.opcode, 7, 0, bytes(range(1, 60)))
    for i in range(len(wire) - 1):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(wire)
            bad[i] ^= flip
            if 0 in bad[:-1]:
                continue  # a new delimiter splits the frame: both halves fail elsewhere
            with pytest.raises(FramingError):
                decode_frame(bytes(bad))


def test_one_command_table_with_unique_opcodes() -> None:
    names = [c.name for c in P.COMMANDS.values()]
    assert len(set(names)) == len(names) == len(P.COMMANDS)
    assert all(op < REPLY_BIT for op in P.COMMANDS)
    assert {c.name for c in P.COMMANDS.values() if not c.idempotent} == {
        "pulse",
        "pulse_sparse",
        "program",
    }


@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_pulse_request_round_trip(rows: int, cols: int, data: st.DataObject) -> None:
    n = rows * cols * 4
    counts = np.array(data.draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)), np.uint8)
    reset = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    f = {"chip": 1, "row0": 3, "row1": 3 + rows, "col0": 5, "col1": 5 + cols, "session": 9}
    payload = P.pack(P.PULSE.request, f, {"counts": counts, "reset": reset})
    assert len(payload) == 13 + n + (n + 7) // 8
    f2, a2 = P.unpack(P.PULSE.request, payload)
    assert f2 == f
    np.testing.assert_array_equal(a2["counts"], counts)
    np.testing.assert_array_equal(a2["reset"], reset)


def test_unpack_checks_lengths_before_frombuffer() -> None:
    f = {"chip": 0, "row0": 0, "row1": 2, "col0": 0, "col1": 2, "batch": 1}
    payload = P.pack(P.MVM.request, f, {"x": np.array([1, -1], np.int8)})
    with pytest.raises(P.PayloadError, match="needs"):
        P.unpack(P.MVM.request, payload[:-1])
    with pytest.raises(P.PayloadError, match="needs"):
        P.unpack(P.MVM.request, payload + b"\x01")
    with pytest.raises(P.PayloadError, match="elements"):
        P.pack(P.MVM.request, f, {"x": np.array([1, 2, 3], np.int8)})


def test_validators_refuse_what_the_board_would_refuse() -> None:
    geo = P.Geometry(chip_ids=(0, 1), max_pulses_per_device=255, max_pulses_per_command=100)
    region = {"chip": 0, "row0": 0, "row1": 1, "col0": 0, "col1": 30}
    with pytest.raises(P.PayloadError) as exc:
        P.check_request(P.PULSE, region, {"counts": np.ones(120, np.uint8)}, geo)
    assert exc.value.status == P.Status.LIMIT_EXCEEDED
    with pytest.raises(P.PayloadError) as exc:
        P.check_request(P.READ, {**region, "col1": 257}, {}, geo)
    assert exc.value.status == P.Status.BAD_REGION
    with pytest.raises(P.PayloadError):
        P.check_request(P.SELECT_CHIP, {"chip": 2}, {}, geo)
