"""MVM_BITS (firmware 1.3): binary inputs travel as one bit each, with the same results as
MVM's one byte each; a 1.2 board does not know the command and the driver does not use it."""

from __future__ import annotations

import numpy as np

from drivers.board import make_engine, open_board
from drivers.board import protocol as P
from drivers.board.framing import decode_frame, encode_frame
from protocols import Region


def _mvms(url: str) -> tuple[list[np.ndarray], int]:
    rng = np.random.default_rng(4)
    region = Region(0, 0, 40, 0, 24)
    out = []
    with open_board(url) as d:
        d.program(region, rng.uniform(-3, 3, (40, 24)), tolerance_us=0.5, max_iterations=8)
        w0 = d.link.stats.bytes_written
        spikes = (rng.random((50, 40)) < 0.3).astype(np.float32)
        out.append(d.mvm(region, spikes))
        out.append(d.mvm(region, rng.uniform(-1, 1, (5, 40)).astype(np.float32)))
        return out, d.link.stats.bytes_written - w0


def test_binary_inputs_travel_as_bits_with_identical_results(emulator) -> None:
    opts = "max_payload_bytes=4096&timeout_s=2&retries=2"  # one frame per MVM: same noise draws
    new, sent_new = _mvms(f"board://?port={emulator(seed=2)}&{opts}")
    old, sent_old = _mvms(f"board://?port={emulator(seed=2, firmware='1.2')}&{opts}")
    for a, b in zip(new, old, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(new[0]).max() > 0
    # 50 binary vectors of 40 inputs: 2000 bytes as MVM, 250 as MVM_BITS (plus heads)
    assert sent_old - sent_new > 1500


def test_a_1_2_board_refuses_mvm_bits_and_a_1_3_board_runs_it() -> None:
    x = np.array([[True, False, True]])
    region = {"chip": 0, "row0": 0, "row1": 3, "col0": 0, "col1": 2, "batch": 1}
    for firmware, status in (((1, 2), P.Status.BAD_OPCODE), ((1, 3), P.Status.OK)):
        engine = make_engine("hermes", seed=1, firmware=firmware)
        payload = P.pack(P.MVM_BITS.request, region, {"x": x})
        (reply,) = engine.receive(encode_frame(P.MVM_BITS.opcode, 1, 0, payload))
        assert decode_frame(reply).status == status
