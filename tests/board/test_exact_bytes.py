"""Exact bytes of driver calls, checked with the shipped ScriptedPort (no board, no pty)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import DeviceTimeout
from drivers.board import protocol as P
from drivers.board.client import BoardClient
from drivers.board.serial_link import SerialLink
from drivers.board.testing import ScriptedPort, frame


def test_select_chip_bytes_are_pinned() -> None:
    # body 01 02 0701 00 0100 01 | crc32 0x68b78d77, COBS-stuffed around its two zeros
    request = bytes.fromhex("05 01 02 07 01 02 01 06 01 77 8d b7 68 00")
    port = ScriptedPort([(request, frame(P.SELECT_CHIP, 0x0107, {"chip": 1}, reply=True))])
    BoardClient(SerialLink(port, first_seq=0x0107)).select(1)
    port.assert_done()
    assert port.written == [frame(P.SELECT_CHIP, 0x0107, {"chip": 1})]


def test_pulse_request_is_exactly_the_table_layout() -> None:
    region = {"chip": 0, "row0": 1, "row1": 2, "col0": 3, "col1": 5}
    counts = np.array([1, 0, 0, 2, 0, 0, 0, 3], np.uint8)
    reset = np.array([0, 1, 0, 0, 0, 0, 0, 0], bool)
    body = bytes.fromhex("00 0100 0200 0300 0500") + counts.tobytes() + bytes([0b10])
    assert P.pack(P.PULSE.request, region, {"counts": counts, "reset": reset}) == body
    reply = frame(P.PULSE, 9, {"set_pulses": 6, "resets": 1, "time_s": 2.5e-6}, reply=True)
    port = ScriptedPort([(frame(P.PULSE, 9, region, {"counts": counts, "reset": reset}), reply)])
    client = BoardClient(SerialLink(port, first_seq=9))
    head, _ = client.call(P.PULSE, region, {"counts": counts, "reset": reset})
    assert head == {"set_pulses": 6, "resets": 1, "time_s": 2.5e-6}
    port.assert_done()


def test_a_lost_reply_is_retransmitted_with_the_same_bytes() -> None:
    request = frame(P.STATUS, 40)
    port = ScriptedPort([(request, b""), (request, b"\x00garbage\x00"), (request, b"")])
    link = SerialLink(port, first_seq=40, timeout_s=0.01, retries=2)
    with pytest.raises(DeviceTimeout, match="after 3 attempts"):
        BoardClient(link).status()
    port.assert_done()
    assert link.stats.bad_frames == 1 and link.stats.retransmissions == 2
