"""A board link that survives (issue #13): default settings over a 2 % per-byte faulty line,
a restarted emulator, and a command in flight across the restart.

The line faults are the emulator's own (corrupted, dropped and delayed bytes, both ways);
the restart is a real SIGTERM of the emulator process and a new one on the same TCP port
and state directory.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from drivers import open_driver
from drivers.board import make_engine
from drivers.board import protocol as P
from drivers.board.framing import Deframer, encode_frame
from drivers.conformance import REQUIREMENTS, run_conformance
from protocols.region import Region


@pytest.mark.slow
def test_default_link_passes_conformance_at_2_percent_byte_faults(
    emulator: Callable[..., str],
) -> None:
    port = emulator(seed=1, fault_rate=0.02)
    report = run_conformance(f"board://?port={port}")  # no link settings: the defaults
    assert len(report.outcomes) == len(REQUIREMENTS)
    assert report.passed, report.format()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_driver_reconnects_after_the_emulator_restarts(
    emulator: Callable[..., str], tmp_path: Path
) -> None:
    tcp = _free_port()
    state = tmp_path / "board"
    address = emulator(tcp_port=tcp, state_dir=state, seed=4)
    region = Region(0, 0, 4, 0, 4)
    counts = np.zeros((4, 4, 4), np.int32)
    counts[..., 0] = 3
    with open_driver(f"board://?port={address}") as d:
        d.apply_pulses(region, counts, request_id="before")
        before = d.read_conductances(region)
        emulator.stop(address)  # type: ignore[attr-defined]  # SIGTERM: chips and memory saved
        again = emulator(tcp_port=tcp, state_dir=state, seed=4)
        assert again == address
        after = d.read_conductances(region)  # the same driver object, reconnected
        assert d.link.stats.reconnects >= 1  # type: ignore[attr-defined]
        # non-volatile PCM: the pulsed devices kept their conductance (reads are noisy)
        assert after[..., 0].min() > before[..., 1:].max() + 0.5
        assert abs(after[..., 0].mean() / before[..., 0].mean() - 1) < 0.1
        rep = d.apply_pulses(region, counts, request_id="after")  # same session, still valid
        assert rep.set_pulses == int(counts.sum())


def _pulse_frame(session: int, seq: int) -> bytes:
    fields = {"chip": 0, "row0": 0, "row1": 2, "col0": 0, "col1": 2, "session": session}
    counts = np.full((2, 2, 4), 2, np.uint8)
    payload = P.pack(
        P.PULSE.request, fields, {"counts": counts, "reset": np.zeros_like(counts, bool)}
    )
    return encode_frame(P.PULSE.opcode, seq, 0, payload)


def _reply(engine: object, wire: bytes) -> object:
    (frame,) = Deframer().feed(b"".join(engine.receive(wire)))  # type: ignore[attr-defined]
    return frame


@pytest.mark.parametrize("executed_before_restart", [True, False])
def test_a_command_in_flight_across_a_restart_is_applied_exactly_once(
    tmp_path: Path, executed_before_restart: bool
) -> None:
    """The host sent a pulse command and lost the reply; the board restarted (chips and
    reply memory from its state directory). Sending the identical frame again (same session,
    same seq) resolves it: answered from memory if it ran, executed if it never arrived."""
    session, seq = 0x5EED, 77
    board = make_engine(seed=2, state_dir=tmp_path)
    _reply(
        board,
        encode_frame(P.IDENTIFY.opcode, 1, 0, P.pack(P.IDENTIFY.request, {"session": session})),
    )
    _reply(
        board, encode_frame(P.SELECT_CHIP.opcode, 2, 0, P.pack(P.SELECT_CHIP.request, {"chip": 0}))
    )
    if executed_before_restart:
        first = _reply(board, _pulse_frame(session, seq))  # the reply is "lost" on the line
        assert first.status == P.Status.OK
    from drivers.board.chips import save_chips

    save_chips(board.chips, tmp_path)
    board.save_memory(tmp_path)
    restarted = make_engine(seed=2, state_dir=tmp_path)
    again = _reply(restarted, _pulse_frame(session, seq))
    assert again.status == P.Status.OK
    set_pulses = P.unpack(P.PULSE.reply, again.payload)[0]["set_pulses"]
    assert set_pulses == 2 * 2 * 4 * 2
    assert restarted.replays == (1 if executed_before_restart else 0)
    assert restarted.executed == (0 if executed_before_restart else 1)
