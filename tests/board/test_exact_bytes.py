"""Exact bytes of driver calls, checked with the shipped ScriptedPort (no board, no pty)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import DeviceError, DeviceTimeout
from drivers.board import protocol as P
from drivers.board.client import BoardClient, Identity
from drivers.board.hardware import HardwareDriver
from drivers.board.serial_link import SerialLink
from drivers.board.setup import LabSetup
from drivers.board.testing import ScriptedPort, frame
from protocols import Region


def test_select_chip_bytes_are_pinned() -> None:
    # body 01 02 0701 00 0100 01 | crc32 0x68b78d77, COBS-stuffed around its two zeros
    request = bytes.fromhex("05 01 02 07 01 02 01 06 01 77 8d b7 68 00")
    port = ScriptedPort([(request, frame(P.SELECT_CHIP, 0x0107, {"chip": 1}, reply=True))])
    BoardClient(SerialLink(port, first_seq=0x0107)).select(1)
    port.assert_done()
    assert port.written == [frame(P.SELECT_CHIP, 0x0107, {"chip": 1})]


def test_pulse_request_is_exactly_the_table_layout() -> None:
    region = {"chip": 0, "row0": 1, "row1": 2, "col0": 3, "col1": 5, "session": 0x01020304}
    counts = np.array([1, 0, 0, 2, 0, 0, 0, 3], np.uint8)
    reset = np.array([0, 1, 0, 0, 0, 0, 0, 0], bool)
    body = bytes.fromhex("00 0100 0200 0300 0500 04030201") + counts.tobytes() + bytes([0b10])
    assert P.pack(P.PULSE.request, region, {"counts": counts, "reset": reset}) == body
    reply = frame(P.PULSE, 9, {"set_pulses": 6, "resets": 1, "time_s": 2.5e-6}, reply=True)
    port = ScriptedPort([(frame(P.PULSE, 9, region, {"counts": counts, "reset": reset}), reply)])
    client = BoardClient(SerialLink(port, first_seq=9))
    head, _ = client.call(P.PULSE, region, {"counts": counts, "reset": reset})
    assert head == {"set_pulses": 6, "resets": 1, "time_s": 2.5e-6}
    port.assert_done()


def test_a_lost_reply_is_retransmitted_with_the_same_bytes() -> None:
    """A silent board: the identical frame 1 + retries times, then DeviceTimeout."""
    request = frame(P.STATUS, 40)
    port = ScriptedPort([(request, b""), (request, b""), (request, b"")])
    link = SerialLink(port, first_seq=40, timeout_s=0.01, retries=2)
    with pytest.raises(DeviceTimeout, match="no reply to status .* after 3 attempts"):
        BoardClient(link).status()
    port.assert_done()
    assert link.stats.retransmissions == 2 and not link.last_heard


def test_garbage_or_a_nak_is_answered_with_an_immediate_retransmission() -> None:
    """A board that is heard but damaged is not dead: the link asks again at once, past
    ``retries``, until the reply gets through."""
    request = frame(P.STATUS, 41)
    nak = frame_nak()
    reply = frame(P.STATUS, 41, STATUS_FIELDS, reply=True)
    script = [(request, b"\x00garbage\x00"), (request, nak), (request, nak), (request, reply)]
    port = ScriptedPort(script)
    link = SerialLink(port, first_seq=41, timeout_s=5.0, retries=1)
    assert BoardClient(link).status()["rx_frames"] == 7
    port.assert_done()
    assert (link.stats.bad_frames, link.stats.naks, link.stats.retransmissions) == (1, 2, 3)


STATUS_FIELDS = {
    "selected_chip": 0,
    "last_status": 0,
    "rx_frames": 7,
    "bad_frames": 0,
    "replays": 0,
    "executed": 0,
    "time_s": 0.0,
}


def frame_nak() -> bytes:
    from drivers.board.engine import NAK_WIRE

    return NAK_WIRE


def _driver_on(port: ScriptedPort, first_seq: int) -> HardwareDriver:
    setup = LabSetup.from_dict({"link": {"port": "scripted"}})
    geometry = P.Geometry(chip_ids=(0, 1))
    identity = Identity("1.2", 1, geometry, 1.0, 2**-10, 0.0, 10.0, 10.0, 0.1)
    client = BoardClient(SerialLink(port, first_seq=first_seq, timeout_s=0.01, retries=1))
    client.session, client.geometry, client.selected = 0xABCD, geometry, 0
    return HardwareDriver(setup, client.link, client, identity, None)


def test_pulse_refused_after_a_restart_mid_retransmission_is_not_resent() -> None:
    """First copy's reply lost, board restarts, the retransmission is refused: the driver
    must not resend (the first copy may have been applied) and must say so."""
    fields = {"chip": 0, "row0": 0, "row1": 1, "col0": 0, "col1": 1, "session": 0xABCD}
    arrays = {"counts": np.array([2, 0, 0, 0], np.uint8), "reset": np.zeros(4, bool)}
    request = frame(P.PULSE, 5, fields, arrays)
    refused = frame(P.PULSE, 5, reply=True, status=P.Status.UNKNOWN_SESSION)
    port = ScriptedPort([(request, b""), (request, refused)])
    driver = _driver_on(port, 5)
    counts = np.zeros((1, 1, 4), np.int32)
    counts[0, 0, 0] = 2
    with pytest.raises(DeviceError, match="may or may not have been applied"):
        driver.apply_pulses(Region(0, 0, 1, 0, 1), counts)
    port.assert_done()
