"""Lease bookkeeping: exclusive writer, shared readers, expiry by heartbeat (no sleeps)."""

from __future__ import annotations

import pytest

from drivers import LeaseConflict, NotFound
from drivers.leases import LeaseTable
from protocols import Region

A = Region(0, 0, 8, 0, 8)
B = Region(0, 4, 12, 4, 12)  # overlaps A
C = Region(1, 0, 8, 0, 8)  # other chip


def test_exclusive_writer_shared_readers() -> None:
    t = LeaseTable(ttl_s=5)
    t.acquire("alice", A, "write", now=0)
    with pytest.raises(LeaseConflict, match="alice"):
        t.acquire("bob", B, "read", now=0)
    with pytest.raises(LeaseConflict):
        t.check("bob", B, write=False, now=0)
    t.acquire("bob", C, "write", now=0)  # no overlap
    t.acquire("alice", B, "write", now=0)  # own leases never conflict
    t2 = LeaseTable(ttl_s=5)
    t2.acquire("alice", A, "read", now=0)
    t2.acquire("bob", B, "read", now=0)
    t2.check("bob", B, write=False, now=0)
    with pytest.raises(LeaseConflict):
        t2.check("bob", B, write=True, now=0)
    with pytest.raises(LeaseConflict):
        t2.check("bob", None, write=True, now=0)


def test_leases_expire_when_heartbeats_stop() -> None:
    t = LeaseTable(ttl_s=2)
    lease = t.acquire("alice", A, "write", now=0)
    t.touch("alice", now=1.5)
    with pytest.raises(LeaseConflict):
        t.check("bob", A, write=True, now=3.0)  # 1.5 s since alice's heartbeat
    assert t.expire(now=3.4) == []
    assert t.expire(now=3.6) == [lease]
    t.check("bob", A, write=True, now=3.6)
    assert len(t) == 0


def test_release_only_own_lease() -> None:
    t = LeaseTable(ttl_s=2)
    lease = t.acquire("alice", A, "write", now=0)
    with pytest.raises(NotFound):
        t.release("bob", lease.lease_id, now=0)
    t.release("alice", lease.lease_id, now=0)
    with pytest.raises(NotFound):
        t.release("alice", lease.lease_id, now=0)
    assert t.held_by("alice") == []
