"""The emulated firmware in-process: ack by seq, sessions, chip selection, status codes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.board import make_engine
from drivers.board import protocol as P
from drivers.board.framing import REPLY_BIT, decode_frame, encode_frame


def _send(engine, cmd, seq, fields=None, arrays=None, raw=None):
    payload = raw if raw is not None else P.pack(cmd.request, fields or {}, arrays)
    (reply,) = engine.receive(encode_frame(cmd.opcode, seq, 0, payload))
    frame = decode_frame(reply)
    assert frame.opcode == cmd.opcode | REPLY_BIT and frame.seq == seq
    return frame, reply


@pytest.fixture(scope="module")
def engine():
    return make_engine("hermes", seed=3)


def test_retransmitted_pulse_is_applied_once(engine) -> None:
    _send(engine, P.IDENTIFY, 1, {"session": 11})
    region = {"chip": 0, "row0": 0, "row1": 2, "col0": 0, "col1": 2, "session": 11}
    arrays = {"counts": np.full(16, 3, np.uint8), "reset": np.zeros(16, bool)}
    executed = engine.executed
    first, wire1 = _send(engine, P.PULSE, 2, region, arrays)
    again, wire2 = _send(engine, P.PULSE, 2, region, arrays)
    assert wire1 == wire2 and first.status == P.Status.OK
    assert engine.executed == executed + 1 and engine.replays >= 1
    # The same seq with a *different* request is a new command (a host restarted).
    other = {"counts": np.full(16, 1, np.uint8), "reset": np.zeros(16, bool)}
    _send(engine, P.PULSE, 2, region, other)
    assert engine.executed == executed + 2


def test_new_session_forgets_old_seqs(engine) -> None:
    _send(engine, P.IDENTIFY, 5, {"session": 21})
    f1, _ = _send(engine, P.STATUS, 6)
    _send(engine, P.IDENTIFY, 5, {"session": 22})
    f2, _ = _send(engine, P.STATUS, 6)
    assert (
        P.unpack(P.STATUS.reply, f2.payload)[0]["executed"]
        > (P.unpack(P.STATUS.reply, f1.payload)[0]["executed"])
    )


def test_region_command_on_unselected_chip_is_refused(engine) -> None:
    _send(engine, P.SELECT_CHIP, 30, {"chip": 0})
    frame, _ = _send(engine, P.READ, 31, {"chip": 1, "row0": 0, "row1": 1, "col0": 0, "col1": 1})
    assert frame.status == P.Status.WRONG_CHIP
    assert b"SELECT_CHIP" in frame.payload


def test_bad_requests_get_status_codes(engine) -> None:
    (reply,) = engine.receive(encode_frame(0x42, 40, 0, b""))
    assert decode_frame(reply).status == P.Status.BAD_OPCODE
    frame, _ = _send(engine, P.READ, 41, raw=b"\x00\x01")
    assert frame.status == P.Status.BAD_PAYLOAD
    frame, _ = _send(engine, P.READ, 42, {"chip": 0, "row0": 5, "row1": 5, "col0": 0, "col1": 1})
    assert frame.status == P.Status.BAD_REGION


def test_mvm_codes_carry_the_adc_output_exactly(engine) -> None:
    """Wire codes times the reported LSB reproduce the simulator's ADC output exactly."""
    twin = make_engine("hermes", seed=3)
    ident, _ = _send(twin, P.IDENTIFY, 1, {"session": 1})
    lsb = P.unpack(P.IDENTIFY.reply, ident.payload)[0]["adc_lsb_us"]
    codes = np.array([[127, -64, 3, 0]], np.int8)
    region = {"chip": 0, "row0": 0, "row1": 4, "col0": 0, "col1": 3}
    frame, _ = _send(twin, P.MVM, 2, {**region, "batch": 1}, {"x": codes})
    y_codes = P.unpack(P.MVM.reply, frame.payload)[1]["y"]
    ref = make_engine("hermes", seed=3).chips[0].mvm((0, 4, 0, 3), codes / 127.0)
    np.testing.assert_allclose(y_codes * lsb, ref.ravel(), rtol=1e-6, atol=1e-6)


@given(opcode=st.integers(0, 0x7F), payload=st.binary(max_size=300), garbage=st.binary(max_size=64))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_firmware_answers_any_framed_request_and_survives_garbage(
    engine, opcode: int, payload: bytes, garbage: bytes
) -> None:
    engine.receive(garbage + b"\x00")  # line noise, then a delimiter: resync
    (reply,) = engine.receive(encode_frame(opcode, 999, 0, payload))
    frame = decode_frame(reply)
    assert frame.seq == 999 and frame.opcode == opcode | REPLY_BIT
    assert frame.status in {int(s) for s in P.Status}
    ok, _ = _send(engine, P.STATUS, 1000)
    assert ok.status == P.Status.OK


@pytest.mark.hardware
def test_conformance_on_a_real_board(device_url: str) -> None:
    """Runs only with ``pytest --device-url board://lab.yaml`` (a real board)."""
    from drivers.conformance import run_conformance

    if not device_url.startswith("board://"):
        pytest.skip("--device-url is not a board:// URL")
    report = run_conformance(device_url)
    assert report.passed, report.format()


def test_oversized_replies_are_refused_not_crashed(engine) -> None:
    _send(engine, P.SELECT_CHIP, 2000, {"chip": 0})
    frame, _ = _send(
        engine, P.READ, 2001, {"chip": 0, "row0": 0, "row1": 256, "col0": 0, "col1": 256}
    )
    assert frame.status == P.Status.LIMIT_EXCEEDED and b"smaller region" in frame.payload
    x = np.zeros(250 * 256, np.int8)
    region = {"chip": 0, "row0": 0, "row1": 256, "col0": 0, "col1": 256, "batch": 250}
    frame, _ = _send(engine, P.MVM, 2002, region, {"x": x})
    assert frame.status == P.Status.LIMIT_EXCEEDED and b"smaller batch" in frame.payload


def test_a_rebooted_board_refuses_old_session_pulses_instead_of_reapplying() -> None:
    board = make_engine("ideal", seed=0)
    _send(board, P.IDENTIFY, 1, {"session": 77})
    region = {"chip": 0, "row0": 0, "row1": 1, "col0": 0, "col1": 1, "session": 77}
    arrays = {"counts": np.array([3, 0, 0, 0], np.uint8), "reset": np.zeros(4, bool)}
    first, _ = _send(board, P.PULSE, 2, region, arrays)
    assert first.status == P.Status.OK
    executed = board.executed
    board.reboot()  # the reply was lost, then the microcontroller reset
    again, _ = _send(board, P.PULSE, 2, region, arrays)  # the host's retransmission
    assert again.status == P.Status.UNKNOWN_SESSION and board.executed == executed
    g = board.chips[0].read((0, 1, 0, 1))
    assert g[0, 0, 0] == pytest.approx(0.3)  # applied exactly once
