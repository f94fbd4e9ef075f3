"""``drivers.salvage``: one flipped byte in the middle of the journal is refused at start
(never dropped silently); salvage keeps the provable prefix, drops the reply records the
kept chip state does not cover, and names what was lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.salvage import format_report, salvage
from drivers.server import DeviceServer
from drivers.sim import SimDriver
from drivers.statedb import StateCorrupt
from protocols import Region, encode
from protocols.messages import PulseRequest
from tests.drivers.fakes import Sessions

R = Region(0, 0, 8, 0, 8)


def _frames(i: int, counts: np.ndarray) -> list:  # type: ignore[type-arg]
    return encode(PulseRequest(request_id=f"p{i}", region=R), {"counts": counts})


def test_a_damaged_middle_record_is_refused_and_salvage_keeps_the_provable_prefix(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    stream = [rng.integers(0, 3, (8, 8, 4)).astype(np.int32) for _ in range(10)]
    drv = SimDriver("hermes", seed=2, state_dir=tmp_path)
    server = DeviceServer(drv, "inproc://unused")
    alice = Sessions(server)
    for i, counts in enumerate(stream):
        assert alice.call(b"alice", _frames(i, counts))[0].kind != "error"
    db = drv.state_db
    assert db is not None
    seqs = [seq for seq, _, _ in db.journal()]
    assert len(seqs) == 10
    (blob,) = db.conn.execute("SELECT arrays FROM journal WHERE seq = ?", (seqs[4],)).fetchone()
    db.conn.execute(
        "UPDATE journal SET arrays = ? WHERE seq = ?", (bytes([blob[0] ^ 4]) + blob[1:], seqs[4])
    )
    db.close()  # the process dies

    with pytest.raises(StateCorrupt, match=f"journal record {seqs[4]} fails its digest"):
        SimDriver("hermes", seed=2, state_dir=tmp_path)
    report = salvage(tmp_path)
    assert report["dropped_journal"] == [f"alice-1/p{i}" for i in range(4, 10)]
    assert sorted(report["dropped_replies"]) == sorted(f"alice-1/p{i}" for i in range(4, 10))
    assert "journal records 1..4" in report["chip_state"]
    text = format_report(report)
    assert "alice-1/p4" in text and "a retry applies them again" in text

    with SimDriver("hermes", seed=2) as ref:
        for i, counts in enumerate(stream[:4]):
            ref.apply_pulses(R, counts, request_id=f"p{i}")
        kept_state = ref.true_conductances(R)
        for i, counts in enumerate(stream[4:], start=4):
            ref.apply_pulses(R, counts, request_id=f"p{i}")
        full_state = ref.true_conductances(R)
    with SimDriver("hermes", seed=2, state_dir=tmp_path) as again:
        np.testing.assert_array_equal(again.true_conductances(R), kept_state)
        server = DeviceServer(again, "inproc://unused")
        resumed = Sessions(server)
        resumed.tokens[b"alice"] = alice.tokens[b"alice"]  # the same session, after the restart
        for i, counts in enumerate(stream):  # the client retries everything it sent
            assert resumed.call(b"alice", _frames(i, counts))[0].kind != "error"
        # the first four answered from their records, the lost six applied once more
        np.testing.assert_array_equal(again.true_conductances(R), full_state)
