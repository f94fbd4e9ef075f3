"""Run reservations allocated by the server: allocation, the FIFO queue, --no-wait, take-back
by the same identity and run id, expiry after the TTL, persistence, and enforcement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers import LeaseConflict
from drivers.reservations import ReservationTable, allocate
from drivers.server import DeviceServer
from drivers.sim import SimDriver
from drivers.statedb import StateDB
from protocols import Region, encode
from protocols.messages import (
    AdvanceRequest,
    Heartbeat,
    MatrixWant,
    MvmRequest,
    ReserveRelease,
    ReserveRequest,
    ResetRequest,
    StatusRequest,
)
from tests.drivers.fakes import Sessions


def W(name: str, rows: int, cols: int, **kw: object) -> MatrixWant:
    return MatrixWant(name=name, rows=rows, cols=cols, **kw)  # type: ignore[arg-type]


def reserve(run: str, *wants: MatrixWant, wait: bool = True, rid: str = "r") -> list:  # type: ignore[type-arg]
    return encode(ReserveRequest(request_id=rid, run_id=run, matrices=wants, wait=wait))


def test_allocation_is_first_fit_and_never_overlaps() -> None:
    taken = [Region(0, 0, 100, 0, 100)]
    got = allocate([W("a", 100, 100), W("b", 200, 50)], 2, 256, 256, taken)
    assert got is not None
    assert got["b"] == Region(0, 0, 200, 100, 150)  # tallest first, beside the taken block
    assert not got["a"].overlaps(got["b"]) and not any(g.overlaps(taken[0]) for g in got.values())
    assert allocate([W("x", 256, 256, chip=0)], 2, 256, 256, taken) is None
    assert allocate([W("x", 256, 256)], 2, 256, 256, taken) == {"x": Region(1, 0, 256, 0, 256)}


def test_disjoint_runs_are_granted_side_by_side_and_status_shows_them() -> None:
    server = DeviceServer(SimDriver("ideal"), "inproc://unused")
    c = Sessions(server)
    a = c.call(b"alice", reserve("runA", W("h0.W", 88, 150), W("out.W", 150, 88)))[0]
    b = c.call(b"bob", reserve("runB", W("h0.W", 88, 150), W("out.W", 150, 88)))[0]
    assert a.granted and b.granted
    regions = [*a.regions.values(), *b.regions.values()]
    for i, x in enumerate(regions):
        for y in regions[i + 1 :]:
            assert not x.overlaps(y)
    assert a.regions["h0.W"].row0 == 0 and b.regions["h0.W"] != a.regions["h0.W"]
    st = c.call(b"alice", encode(StatusRequest(request_id="s")))[0]
    assert {(r.identity, r.run_id) for r in st.reservations} == {
        (c.identity[b"alice"], "runA"),
        (c.identity[b"bob"], "runB"),
    }
    assert st.chips[0].reserved_fraction > 0 and st.queue == ()
    # bob may not touch alice's region, nor advance the whole device's clock
    x = np.zeros((1, 88), np.float32)
    mvm = MvmRequest(request_id="m", region=a.regions["h0.W"], arrays=())
    from protocols import encode as enc

    refused = c.call(b"bob", enc(mvm, {"x": x}))[0]
    assert refused.code == "lease_conflict" and "runA" in refused.message
    assert c.call(b"bob", encode(ResetRequest(request_id="z", region=a.regions["out.W"])))[
        0
    ].code == ("lease_conflict")
    # a client without a reservation may not move the whole device's clock; a tenant
    # of the simulator (which isolates tenants) moves only its own
    adv = c.call(b"carol", encode(AdvanceRequest(request_id="adv", dt_s=1.0)))[0]
    assert adv.code == "lease_conflict" and "whole device" in adv.message
    mine = c.call(b"bob", encode(AdvanceRequest(request_id="adv", dt_s=1.0)))[0]
    assert mine.kind == "advance_reply"


def test_queue_is_fifo_no_wait_refuses_and_release_grants_the_head() -> None:
    server = DeviceServer(SimDriver("ideal"), "inproc://unused")
    c = Sessions(server)
    whole = [W(f"chip{k}", 256, 256, chip=k, whole_chip=True) for k in (0, 1)]
    assert c.call(b"alice", reserve("big", *whole))[0].granted
    refused = c.call(b"bob", reserve("small", W("m", 8, 8), wait=False))[0]
    assert refused.kind == "error" and refused.code == "lease_conflict"
    assert "\n" not in refused.message and "--no-wait" in refused.message
    first = c.call(b"bob", reserve("small", W("m", 8, 8)), now=1.0)[0]
    second = c.call(b"carol", reserve("tiny", W("m", 4, 4)), now=1.0)[0]
    assert (first.granted, first.position) == (False, 1) and "big" in first.waiting_for
    assert (second.granted, second.position) == (False, 2)
    st = c.call(b"alice", encode(StatusRequest(request_id="s")), now=1.0)[0]
    assert [(q.position, q.run_id) for q in st.queue] == [(1, "small"), (2, "tiny")]
    assert c.call(b"alice", encode(ReserveRelease(request_id="x", run_id="big")), now=2.0)[
        0
    ].released
    # strict FIFO: the second in line is not granted before the first
    assert c.call(b"carol", reserve("tiny", W("m", 4, 4)), now=2.0)[0].position == 2
    got = c.call(b"bob", reserve("small", W("m", 8, 8)), now=2.0)[0]
    assert got.granted and got.regions["m"].rows == 8
    assert c.call(b"carol", reserve("tiny", W("m", 4, 4)), now=2.0)[0].granted


def test_same_identity_and_run_take_it_back_and_it_lapses_after_the_ttl() -> None:
    server = DeviceServer(SimDriver("ideal"), "inproc://unused", reservation_ttl_s=100.0)
    c = Sessions(server)
    a = c.call(b"alice", reserve("run", W("w", 16, 16)), now=0.0)[0]
    again = c.call(b"alice", reserve("run", W("w", 16, 16, region=a.regions["w"])), now=50.0)[0]
    assert again.granted and again.reservation_id == a.reservation_id
    other = c.call(b"bob", reserve("run", W("w", 16, 16)), now=50.0)[
        0
    ]  # same run id, other identity
    assert other.granted and other.regions["w"] != a.regions["w"]
    hb = c.call(b"alice", encode(Heartbeat(request_id="h")), now=60.0)[0]
    assert hb.runs == ("run",)
    # alice silent for more than the TTL: her reservation lapses, bob (alive) keeps his
    c.call(b"bob", encode(Heartbeat(request_id="h2")), now=150.0)
    hb = c.call(b"alice", encode(Heartbeat(request_id="h3")), now=161.0)[0]
    assert hb.runs == ()
    taken = c.call(b"carol", reserve("c", W("w", 16, 16, region=a.regions["w"])), now=161.0)[0]
    assert taken.granted


def test_reservations_survive_a_restart_with_the_state_dir(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    server = DeviceServer(SimDriver("ideal"), "inproc://unused", state_db=db)
    c = Sessions(server)
    a = c.call(b"alice", reserve("run", W("w", 16, 16), W("v", 8, 8)))[0]
    token = c.tokens[b"alice"]
    server.close()
    db.close()
    db = StateDB.open(tmp_path)
    server = DeviceServer(SimDriver("ideal"), "inproc://unused", state_db=db)
    c2 = Sessions(server)
    c2.tokens[b"alice"], c2.identity[b"alice"] = token, c.identity[b"alice"]
    back = c2.call(b"alice", reserve("run", W("w", 16, 16), W("v", 8, 8)))[0]
    assert back.granted and back.regions == a.regions and back.reservation_id == a.reservation_id
    held = c2.call(b"bob", reserve("b", W("w", 16, 16, region=a.regions["w"]), wait=False))[0]
    assert held.code == "lease_conflict"
    db.close()


def test_impossible_requests_are_refused_in_one_line() -> None:
    table = ReservationTable(2, 256, 256, 10.0)
    for wants, match in (
        ([W("a", 300, 1)], "larger than"),
        ([W("a", 1, 1, chip=5)], "does not exist"),
        ([W("a", 2, 2, region=Region(0, 0, 3, 0, 2))], "is 3x2"),
        ([W("a", 1, 1), W("a", 1, 1)], "unique"),
    ):
        with pytest.raises(Exception, match=match):
            table.request("x", "r", wants, None, wait=True, now=0.0)
    with pytest.raises(LeaseConflict):
        table.request("x", "r", [W("all", 256, 256, chip=0)], None, wait=True, now=0.0)
        table.request("y", "r", [W("a", 1, 1, chip=0)], None, wait=False, now=0.0)


def _tenant_traffic(c: Sessions, who: bytes, region: Region, now: float, noise: bool) -> list:  # type: ignore[type-arg]
    """A run's requests on its region; with ``noise`` another client works beside it."""
    from protocols.messages import ProgramRequest, PulseRequest, TimeRequest

    rng = np.random.default_rng(3)
    out: list = []  # type: ignore[type-arg]
    target = rng.uniform(-5, 5, region.shape).astype(np.float32)
    x = rng.uniform(-1, 1, (4, region.rows)).astype(np.float32)
    steps = [
        (ProgramRequest(request_id="p", region=region, tolerance_us=0.5, max_iterations=10), {"target_us": target}),
        (MvmRequest(request_id="m1", region=region), {"x": x}),
        (PulseRequest(request_id="q", region=region), {"counts": np.ones((*region.shape, 4), np.uint8)}),
        (MvmRequest(request_id="m2", region=region), {"x": x}),
        (AdvanceRequest(request_id="a", dt_s=3600.0), {}),
        (MvmRequest(request_id="m3", region=region), {"x": x}),
        (TimeRequest(request_id="t"), {}),
    ]  # fmt: skip
    other = Region(0, 100, 140, 100, 140)
    for i, (msg, arrays) in enumerate(steps):
        if noise:  # the neighbour programs, pulses and reads in between
            c.call(b"bob", encode(ProgramRequest(request_id=f"bp{i}", region=other, tolerance_us=0.5, max_iterations=10), {"target_us": np.full(other.shape, 3.0, np.float32)}), now)  # fmt: skip
            c.call(b"bob", encode(MvmRequest(request_id=f"bm{i}", region=other), {"x": np.ones((64, other.rows), np.float32)}), now)  # fmt: skip
        rep, arr = c.call(who, encode(msg, arrays), now)
        assert rep.kind != "error", rep
        out.append(
            (rep.model_dump(exclude={"request_id"}), {k: v.tolist() for k, v in arr.items()})
        )
    return out


@pytest.mark.parametrize("state", [False, True])
def test_a_runs_noise_and_clock_do_not_depend_on_its_neighbours(
    tmp_path: Path, state: bool
) -> None:
    """hermes: the same requests on the same region give the same replies alone and
    beside a busy neighbour (its own noise stream and clock), also across a restart."""
    region = Region(0, 0, 32, 0, 16)

    def server(sub: str) -> DeviceServer:
        url = tmp_path / sub if state else None
        return DeviceServer(SimDriver("hermes", seed=2, state_dir=url), "inproc://unused")

    results = []
    for noise in (False, True):
        srv = server(f"s{noise}")
        c = Sessions(srv)
        got = c.call(b"alice", encode(ReserveRequest(request_id="r", run_id="run", seed=7, matrices=(W("w", 32, 16, region=region),))))[0]  # fmt: skip
        assert got.granted
        if noise:
            assert c.call(b"bob", reserve("b", W("w", 40, 40, region=Region(0, 100, 140, 100, 140))))[0].granted  # fmt: skip
        results.append(_tenant_traffic(c, b"alice", region, 0.0, noise))
        if state:
            srv.close()
            srv.driver.close()
    assert results[0] == results[1]
    assert results[0][-1][0]["time_s"] < 3600.0 + 1.0  # its own clock: its hour, not bob's traffic


def test_a_tenants_stream_survives_a_crash_and_journal_replay(tmp_path: Path) -> None:
    """The journal records each write's tenant (seed, regions, stream start), so replay
    rebuilds the tenant's stream and clock: after kill -9 it continues exactly."""
    from drivers.base import Tenant

    region = Region(0, 8, 24, 8, 40)
    tenant = Tenant(11, (region,))
    target = np.linspace(-4, 4, region.rows * region.cols, dtype=np.float32).reshape(region.shape)
    x = np.linspace(-1, 1, 3 * region.rows, dtype=np.float32).reshape(3, region.rows)

    def writes(d: SimDriver) -> None:
        d.advance(60.0, request_id="age")  # deliberate ageing of the whole chip
        with d.tenant(tenant):
            d.program(region, target, tolerance_us=0.5, max_iterations=8, request_id="p")
            d.apply_pulses(region, np.ones((*region.shape, 4), np.int32), request_id="q")
            d.advance(30.0, request_id="a")

    def reads(d: SimDriver) -> tuple:  # type: ignore[type-arg]
        with d.tenant(tenant):
            return d.time_s(), d.mvm(region, x).tolist(), d.read_conductances(region).tolist()

    ref = SimDriver("hermes", seed=1)
    writes(ref)
    crashed = SimDriver("hermes", seed=1, state_dir=tmp_path, compact_every=10_000)
    writes(crashed)
    crashed.state_db.close()  # type: ignore[union-attr]  # kill -9: nothing compacted
    back = SimDriver("hermes", seed=1, state_dir=tmp_path)
    try:
        assert reads(back) == reads(ref)
        assert back.time_s() == pytest.approx(60.0)  # the chip's own clock saw only the ageing
    finally:
        back.close()


def test_tenant_streams_are_memoised_per_tenant_and_stay_isolated() -> None:
    """The driver remembers each tenant's (chip, regions, stream key) instead of building
    them per request: interleaving two tenants' MVMs gives each the same outputs as a
    driver that served that tenant alone, and another seed is another stream."""
    from drivers.base import Tenant

    ra, rb = Region(0, 0, 16, 0, 16), Region(0, 16, 32, 0, 16)
    ta, tb, ta2 = Tenant(1, (ra,)), Tenant(2, (rb,)), Tenant(7, (ra,))
    x = np.linspace(-1, 1, 4 * 16, dtype=np.float32).reshape(4, 16)
    w = np.linspace(-3, 3, 256, dtype=np.float32).reshape(16, 16)

    def setup() -> SimDriver:
        d = SimDriver("hermes", seed=4)
        d.program(ra, w, tolerance_us=0.5, max_iterations=8, request_id="pa")
        d.program(rb, w, tolerance_us=0.5, max_iterations=8, request_id="pb")
        return d

    both, alone = setup(), setup()
    mixed = []
    for _ in range(3):
        with both.tenant(ta):
            mixed.append(both.mvm(ra, x))
        with both.tenant(tb):
            both.mvm(rb, x)
    with alone.tenant(ta):
        solo = [alone.mvm(ra, x) for _ in range(3)]
    for a, b in zip(mixed, solo, strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(both._stream_memo) == {ta, tb}
    with alone.tenant(ta2):
        assert not np.array_equal(alone.mvm(ra, x), solo[0])  # another seed, another stream


def test_reserve_release_is_idempotent_by_request_id() -> None:
    """A retried release returns its first reply (released: true), never a second release:
    a new reservation the same run took in between is not dropped by the retry."""
    server = DeviceServer(SimDriver("ideal"), "inproc://unused")
    c = Sessions(server)
    assert c.call(b"alice", reserve("runA", W("h0.W", 8, 8), rid="r1"))[0].granted
    rel = encode(ReserveRelease(request_id="rel1", run_id="runA"))
    first = c.call(b"alice", rel)[0]
    assert first.kind == "reserve_released" and first.released
    assert c.call(b"alice", reserve("runA", W("h0.W", 8, 8), rid="r2"))[0].granted
    again = c.call(b"alice", rel)[0]  # the retry of rel1
    assert again.kind == "reserve_released" and again.released
    st = c.call(b"alice", encode(StatusRequest(request_id="s")))[0]
    assert [r.run_id for r in st.reservations] == ["runA"]  # r2's reservation still held
    fresh = c.call(b"alice", encode(ReserveRelease(request_id="rel2", run_id="runA")))[0]
    assert fresh.released
    # a different request under a used id is refused, not applied
    other = c.call(b"alice", encode(ReserveRelease(request_id="rel1", run_id="runB")))[0]
    assert other.kind == "error" and other.code == "bad_request"
