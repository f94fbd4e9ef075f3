"""The server's records (drivers.ledger) through DeviceServer.handle on the simulator:
per-identity reply records and "outcome unknown", the audit trail, the wear ledger, and
their durability in the state database; ``hil audit`` on a state dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivers.ledger import AuditLog, WearLedger, open_read_only
from drivers.server import DeviceServer
from drivers.sim import SimDriver
from hil.cli import main
from protocols import Region, encode
from protocols.messages import LeaseAcquire, PulseRequest, ResetRequest
from tests.drivers.fakes import Sessions

R = Region(0, 0, 4, 0, 3)
OTHER = Region(1, 8, 12, 8, 11)


_CLIENTS: dict[int, Sessions] = {}


def _call(server: DeviceServer, who: bytes, frames: list, now: float = 0.0):  # type: ignore[no-untyped-def]
    clients = _CLIENTS.setdefault(id(server), Sessions(server))
    return clients.call(who, frames, now)[0]


def _pulses(rid: str, counts: np.ndarray, region: Region = R) -> list:  # type: ignore[type-arg]
    return encode(PulseRequest(request_id=rid, region=region), {"counts": counts})


def test_reply_records_are_per_identity_and_an_evicted_retry_is_never_applied_again() -> None:
    drv = SimDriver("ideal")
    server = DeviceServer(drv, "inproc://unused", reply_records=8)
    ones = np.ones((4, 3, 4), np.int32)
    first = _call(server, b"victim", _pulses("v0", ones))
    assert first.kind == "apply_pulses_reply"
    for i in range(50):  # another client's flood cannot evict the victim's record
        _call(server, b"flooder", _pulses(f"f{i}", ones, OTHER))
    assert _call(server, b"victim", _pulses("v0", ones)) == first
    before = drv.true_conductances(R)
    for i in range(1, 9):  # the victim's own newer requests push v0 out of its 8 records
        _call(server, b"victim", _pulses(f"v{i}", np.zeros((4, 3, 4), np.int32)))
    late = _call(server, b"victim", _pulses("v0", ones))
    assert late.kind == "error" and late.code == "outcome_unknown"
    np.testing.assert_array_equal(drv.true_conductances(R), before)  # nothing re-applied
    assert "flooder" not in late.message
    changed = _call(server, b"victim", _pulses("v8", ones))  # same id, other arguments
    assert changed.code == "bad_request" and "already used" in changed.message


def test_audit_and_wear_record_every_request_with_its_outcome(tmp_path: Path) -> None:
    drv = SimDriver("ideal", state_dir=tmp_path)
    server = DeviceServer(drv, "inproc://unused")
    counts = np.arange(48, dtype=np.int32).reshape(4, 3, 4) % 3
    mask = np.zeros((4, 3, 4), bool)
    mask[0, 0, 1] = True
    frames = encode(PulseRequest(request_id="p1", region=R), {"counts": counts, "reset_mask": mask})
    assert _call(server, b"alice", frames, now=1.0).kind == "apply_pulses_reply"
    assert _call(server, b"alice", frames, now=1.1).kind == "apply_pulses_reply"  # a retry
    lease = _call(server, b"bob", encode(LeaseAcquire(request_id="l1", region=OTHER)), now=2.0)
    assert lease.kind == "lease_reply"
    refused = _call(server, b"alice", encode(ResetRequest(request_id="r1", region=OTHER)), 3.0)
    assert refused.code == "lease_conflict"
    reset = _call(server, b"bob", encode(ResetRequest(request_id="r2", region=OTHER)), 4.0)
    assert reset.kind == "reset_reply"
    server.close()
    drv.close()

    db = open_read_only(tmp_path)
    rows = AuditLog(db).query()
    assert [(r["identity"], r["verb"], r["outcome"], r["pulses"]) for r in rows] == [
        ("alice-1", "apply_pulses", "ok", int(counts.sum())),  # the retry applied nothing
        ("bob-2", "lease_acquire", "ok", 0),
        ("alice-1", "reset", "lease_conflict", 0),
        ("bob-2", "reset", "ok", 0),
    ]
    assert [r["request_id"] for r in AuditLog(db).query(identity="bob-2")] == ["l1", "r2"]
    assert [r["request_id"] for r in AuditLog(db).query(region=Region(0, 3, 4, 2, 3))] == ["p1"]
    assert AuditLog(db).query(since=rows[-1]["time"] + 1) == []
    wear = WearLedger(db, (256, 256, 4))  # rebuilt from the database
    set_p, resets = wear.device_totals(0)
    np.testing.assert_array_equal(set_p[:4, :3], counts)
    assert set_p.sum() == counts.sum() and resets.sum() == 1 and resets[0, 0, 1] == 1
    set1, resets1 = wear.device_totals(1)
    assert set1.sum() == 0 and resets1.sum() == 4 * 3 * 4 and resets1[8:12, 8:11].min() == 1
    by_region = {(r["chip"], r["requests"], r["set_pulses"]) for r in wear.by_region()}
    assert by_region == {(0, 1, int(counts.sum())), (1, 1, 0)}
    db.close()


def test_wear_totals_survive_folding_and_restart(tmp_path: Path) -> None:
    drv = SimDriver("ideal", state_dir=tmp_path)
    server = DeviceServer(drv, "inproc://unused")
    server.wear.fold_every = 3
    rng = np.random.default_rng(0)
    total = np.zeros((4, 3, 4), np.int64)
    for i in range(7):  # two folds and one row left unfolded
        counts = rng.integers(0, 5, (4, 3, 4)).astype(np.int32)
        total += counts
        _call(server, b"c", _pulses(f"w{i}", counts))
    drv.state_db.close()  # type: ignore[union-attr]  # a crash: no final fold
    db = open_read_only(tmp_path)
    unfolded = db.conn.execute("SELECT count(*) FROM wear WHERE arrays IS NOT NULL").fetchone()
    assert unfolded[0] == 1
    np.testing.assert_array_equal(WearLedger(db, (256, 256, 4)).device_totals(0)[0][:4, :3], total)
    db.close()


def test_hil_audit_reads_a_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimDriver("ideal", state_dir=tmp_path) as drv:
        server = DeviceServer(drv, "inproc://unused")
        _call(server, b"alice", _pulses("p1", np.ones((4, 3, 4), np.int32)))
        _call(server, b"bob", encode(ResetRequest(request_id="r1", region=OTHER)))
        server.close()
    capsys.readouterr()
    assert main(["audit", str(tmp_path), "--json", "--identity", "bob-2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["identity"], r["verb"], r["chip"], r["row0"]) for r in rows] == [
        ("bob-2", "reset", 1, 8)
    ]
    assert main(["audit", str(tmp_path), "--region", "0,0,1,0,1", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" not in out and "1 row(s)" in out
    assert main(["audit", str(tmp_path / "nope")]) == 1
