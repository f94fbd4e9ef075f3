"""MVM_PACKED / MVM_BITS_PACKED (firmware 1.4): the ADC codes of an MVM reply travel packed
(frame of reference per column, drivers/board/packing.py), losslessly; older boards keep
the unpacked commands and give the same results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from drivers.board import make_engine, open_board
from drivers.board import packing as K
from drivers.board import protocol as P
from drivers.board.framing import decode_frame, encode_frame
from protocols import Region

DTYPES = {1: np.int8, 2: np.int16, 4: np.int32}


def _roundtrip(codes: np.ndarray, code_bytes: int) -> tuple[int, np.ndarray, np.ndarray, bytes]:
    kind, ref, width, data = K.encode(codes, code_bytes)
    out = K.decode(kind, *codes.shape, code_bytes, ref, width, data)
    assert out.dtype == np.dtype(DTYPES[code_bytes]).newbyteorder("<")
    np.testing.assert_array_equal(out, codes)
    raw = codes.size * code_bytes
    assert ref.size + width.size + len(data) <= raw  # never longer than the raw codes
    return kind, ref, width, data


@st.composite
def code_frames(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    code_bytes = draw(st.sampled_from([1, 2, 4]))
    info = np.iinfo(DTYPES[code_bytes])
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    # a narrow band somewhere in the range (what trained layers give) or the full range
    lo = draw(st.integers(info.min, info.max))
    hi = draw(
        st.integers(lo, min(info.max, lo + draw(st.sampled_from([0, 1, 7, 40, 255, 1 << 20]))))
    )
    elements = st.integers(lo, hi)
    codes = draw(hnp.arrays(DTYPES[code_bytes], shape, elements=elements))
    return codes, code_bytes


@settings(max_examples=300, deadline=None)
@given(code_frames())
def test_random_code_frames_decode_exactly(frame: tuple[np.ndarray, int]) -> None:
    _roundtrip(*frame)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40)))
def test_any_int8_frame_decodes_exactly(codes: np.ndarray) -> None:
    _roundtrip(codes, 1)


def test_edge_cases() -> None:
    zeros = np.zeros((30, 17), np.int8)
    kind, ref, width, data = _roundtrip(zeros, 1)
    assert kind == K.FRAME_OF_REFERENCE and not width.any() and data == b""  # 34 bytes for 510
    extremes = np.tile(np.array([[-128, 127], [127, -128], [-127, 127]], np.int8), (20, 1))
    kind, ref, width, _ = _roundtrip(extremes, 1)
    assert kind == K.RAW  # full-range columns: packing would not be smaller, so raw
    _roundtrip(np.full((9, 3), -128, np.int8), 1)
    _roundtrip(np.full((9, 3), 127, np.int8), 1)
    _roundtrip(np.zeros((0, 5), np.int8), 1)
    _roundtrip(np.array([[-(2**31), 2**31 - 1]], np.int32), 4)


@pytest.mark.parametrize("w", range(1, 9))
def test_each_width_1_to_8_is_the_bit_length_of_the_column_range(w: int) -> None:
    rng = np.random.default_rng(w)
    base = int(rng.integers(-128, 128 - (2**w - 1)))
    codes = rng.integers(base, base + 2**w, (64, 3)).astype(np.int8)
    codes[0], codes[1] = base, base + 2**w - 1  # the column range is exactly 2^w - 1
    codes[:, 2] = 5  # a constant column: 0 bits
    kind, ref, width, data = _roundtrip(codes, 1)
    assert kind == K.FRAME_OF_REFERENCE
    assert width.tolist() == [w, w, 0] and ref.tolist() == [base, base, 5]
    assert len(data) == (64 * 2 * w + 7) // 8


def test_bit_layout_is_as_documented() -> None:
    """Row-major records, LSB first, bytes filled from their least significant bit:
    values 0..7 in 3 bits are the 24-bit little-endian number sum(v_b << 3b)."""
    codes = (np.arange(8, dtype=np.int8) - 3).reshape(8, 1)
    kind, ref, width, data = K.encode(codes, 1)
    assert (kind, ref.tolist(), width.tolist()) == (K.FRAME_OF_REFERENCE, [-3], [3])
    assert data == bytes.fromhex("88c6fa")
    # two columns: record b is col0's 2 bits then col1's 1 bit (stream bit 3b + j)
    codes = np.array([[0, 0], [1, 1], [2, 0], [3, 1]] * 4, np.int8)
    kind, _, width, data = K.encode(codes, 1)
    assert kind == K.FRAME_OF_REFERENCE and width.tolist() == [2, 1]
    stream = sum(((int(a) | int(b) << 2) << (3 * i)) for i, (a, b) in enumerate(codes))
    assert data == stream.to_bytes(6, "little")


def test_malformed_packed_replies_are_refused() -> None:
    codes = np.arange(40, dtype=np.int8).reshape(20, 2) % 5
    kind, ref, width, data = K.encode(codes, 1)
    assert kind == K.FRAME_OF_REFERENCE
    with pytest.raises(P.PayloadError, match="width 9"):
        K.decode(kind, 20, 2, 1, ref, np.array([9, 3], np.uint8), data)
    with pytest.raises(P.PayloadError, match="bytes"):
        K.decode(kind, 20, 2, 1, ref, width, data[:-1])
    with pytest.raises(P.PayloadError, match="padding"):
        K.decode(kind, 19, 2, 1, ref, width, data[:-1] + bytes([data[-1] | 0x80]))
    with pytest.raises(P.PayloadError, match="range"):
        K.decode(kind, 20, 2, 1, np.array([126, 0], np.int8), width, data)
    with pytest.raises(P.PayloadError, match="packing 7"):
        K.decode(7, 20, 2, 1, ref, width, data)
    with pytest.raises(P.PayloadError, match="code width 3"):
        K.decode(kind, 20, 2, 3, ref, width, data)


def test_a_1_3_board_refuses_the_packed_commands_and_a_1_4_board_runs_them() -> None:
    region = {"chip": 0, "row0": 0, "row1": 3, "col0": 0, "col1": 2, "batch": 1}
    inputs = (
        (P.MVM_BITS_PACKED, np.array([[1, 0, 1]], bool)),
        (P.MVM_PACKED, np.array([[9, 0, -3]], np.int8)),
    )
    for cmd, x in inputs:
        for firmware, status in (((1, 3), P.Status.BAD_OPCODE), ((1, 4), P.Status.OK)):
            engine = make_engine("hermes", seed=1, firmware=firmware)
            payload = P.pack(cmd.request, region, {"x": x})
            (reply,) = engine.receive(encode_frame(cmd.opcode, 1, 0, payload))
            assert decode_frame(reply).status == status


def _run(url: str) -> tuple[list[np.ndarray], int]:
    rng = np.random.default_rng(4)
    region = Region(0, 0, 40, 0, 24)
    out = []
    with open_board(url) as d:
        d.program(region, rng.uniform(-3, 3, (40, 24)), tolerance_us=0.5, max_iterations=8)
        r0 = d.link.stats.bytes_read
        out.append(d.mvm(region, (rng.random((120, 40)) < 0.3).astype(np.float32)))
        out.append(d.mvm(region, rng.uniform(-1, 1, (60, 40)).astype(np.float32)))
        out.append(d.mvm(region, np.zeros((7, 40), np.float32)))
        return out, d.link.stats.bytes_read - r0


def test_packed_codes_give_identical_results_in_fewer_bytes(emulator) -> None:
    opts = "max_payload_bytes=8192&timeout_s=2&retries=2"
    runs = {
        fw: _run(f"board://?port={emulator(seed=2, firmware=fw)}&{opts}")
        for fw in ("1.2", "1.3", "1.4")
    }
    for fw in ("1.2", "1.3"):
        for a, b in zip(runs["1.4"][0], runs[fw][0], strict=True):
            np.testing.assert_array_equal(a, b)
    assert np.abs(runs["1.4"][0][0]).max() > 0
    # 187 rows x 24 codes: 4488 code bytes unpacked (1.2 and 1.3 read the same replies)
    assert runs["1.3"][1] == runs["1.2"][1]
    assert runs["1.4"][1] < runs["1.3"][1] - 1000
