"""SimDriver on the real simulator: contract mapping, determinism and crash-safe persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import simulator
from drivers import DeviceError, InvalidRequest
from drivers.sim import SimDriver, first_set_step_us
from drivers.statedb import StateCorrupt, StateDB, pack_arrays, unpack_arrays
from protocols import Region

R = Region(0, 0, 8, 0, 8)
R1 = Region(1, 4, 12, 4, 12)


def _requests(rng: np.random.Generator, n: int) -> list[tuple[str, Region, np.ndarray]]:
    return [(f"p{i}", R if i % 2 else R1, rng.integers(0, 4, (8, 8, 4))) for i in range(n)]


def _crash(d: SimDriver) -> None:
    """What the kernel does on kill -9: files closed, the lock freed, nothing else."""
    d.state_db.close()  # type: ignore[union-attr]


def _run(d: SimDriver, reqs: list[tuple[str, Region, np.ndarray]]) -> None:
    for rid, region, counts in reqs:
        d.apply_pulses(region, counts, request_id=rid)


def test_first_set_step_matches_pcm_physics() -> None:
    # pcm-physics §2: noise-free path from RESET (0.1 µS) reaches 1.92 µS after one pulse
    assert first_set_step_us(simulator.get_preset("hermes")) + 0.1 == pytest.approx(1.92, abs=0.01)
    assert first_set_step_us(simulator.get_preset("ideal")) == pytest.approx(0.1)


def test_same_seed_same_requests_same_state(rng: np.random.Generator) -> None:
    reqs = _requests(rng, 6)
    with SimDriver("hermes", seed=4) as a, SimDriver("hermes", seed=4) as b:
        _run(a, reqs)
        b.mvm(R, np.full((5, 8), 0.5))  # reads never change the written state
        _run(b, reqs)
        np.testing.assert_array_equal(a.true_conductances(R), b.true_conductances(R))


def test_state_survives_crash_and_graceful_restart(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    reqs = _requests(rng, 10)
    with SimDriver("hermes", seed=1) as ref:
        _run(ref, reqs)
        ref_g = [ref.true_conductances(R), ref.true_conductances(R1)]
    # crash after 6 requests: the driver is abandoned without close (only the lock is freed)
    d = SimDriver("hermes", seed=1, state_dir=tmp_path, compact_every=4)
    _run(d, reqs[:6])
    replies = [d.apply_pulses(r, c, request_id=i) for i, r, c in reqs[4:6]]
    _crash(d)
    with SimDriver("hermes", seed=1, state_dir=tmp_path, compact_every=4) as d2:
        # retried ids after the crash return the recorded replies, apply nothing
        assert [d2.apply_pulses(r, c, request_id=i) for i, r, c in reqs[4:6]] == replies
        _run(d2, reqs[6:8])
    with SimDriver("hermes", seed=1, state_dir=tmp_path) as d3:  # graceful restart
        _run(d3, reqs[8:])
        np.testing.assert_array_equal(d3.true_conductances(R), ref_g[0])
        np.testing.assert_array_equal(d3.true_conductances(R1), ref_g[1])


def test_an_uncommitted_request_leaves_no_trace(tmp_path: Path, rng: np.random.Generator) -> None:
    reqs = _requests(rng, 3)
    d = SimDriver("ideal", state_dir=tmp_path)
    _run(d, reqs[:2])
    db = d.state_db
    assert db is not None
    db.conn.execute("BEGIN IMMEDIATE")  # a crash in the middle of the third request
    _specs, blob = pack_arrays({"counts": reqs[2][2]})
    db.conn.execute(
        "INSERT INTO journal(txn, header, arrays, digest) VALUES (0, '{}', ?, '')", (blob,)
    )
    _crash(d)
    with SimDriver("ideal", state_dir=tmp_path) as d2:
        g = d2.true_conductances(R)
    with SimDriver("ideal") as ref:
        _run(ref, reqs[:2])
        np.testing.assert_array_equal(g, ref.true_conductances(R))


def test_arrays_round_trip_with_dtype_and_shape_and_damage_is_named(tmp_path: Path) -> None:
    arrays = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "m": np.eye(2, dtype=bool)}
    specs, blob = pack_arrays(arrays)
    back = unpack_arrays(specs, blob, "test")
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    with pytest.raises(StateCorrupt, match="beyond its arrays"):
        unpack_arrays(specs, blob + b"x", "test")
    with pytest.raises(StateCorrupt, match="bad dtype"):
        unpack_arrays([["a", "object", [3]]], blob, "test")
    d = SimDriver("ideal", state_dir=tmp_path)
    d.apply_pulses(R, np.ones((8, 8, 4), dtype=np.int32), request_id="one")
    d.apply_pulses(R, np.ones((8, 8, 4), dtype=np.int32), request_id="two")
    db = d.state_db
    assert db is not None
    seqs = [seq for seq, _, _ in db.journal()]
    # one flipped byte inside a blob: invisible to SQLite's page checks, caught by the digest
    (blob,) = db.conn.execute("SELECT arrays FROM journal WHERE seq = ?", (seqs[0],)).fetchone()
    damaged = bytes([blob[0] ^ 1]) + bytes(blob[1:])
    db.conn.execute("UPDATE journal SET arrays = ? WHERE seq = ?", (damaged, seqs[0]))
    _crash(d)
    with pytest.raises(StateCorrupt, match=f"journal record {seqs[0]} fails its digest"):
        SimDriver("ideal", state_dir=tmp_path)
    StateDB.open(tmp_path).close()  # the refusal released the lock


def test_state_dir_guards(tmp_path: Path) -> None:
    with SimDriver("ideal", seed=0, state_dir=tmp_path):
        with pytest.raises(DeviceError, match="in use"):
            SimDriver("ideal", seed=0, state_dir=tmp_path)
    with pytest.raises(InvalidRequest, match="holds preset 'ideal'"):
        SimDriver("hermes", seed=0, state_dir=tmp_path)
    with pytest.raises(InvalidRequest, match="unknown device preset"):
        SimDriver("nope")


def test_program_and_mvm_through_the_contract(rng: np.random.Generator) -> None:
    with SimDriver("ideal") as d:
        target = rng.uniform(-4, 4, R.shape)
        rep = d.program(R, target, tolerance_us=0.1, max_iterations=10)
        assert rep.converged and rep.rms_error_us == 0.0
        x = rng.uniform(-1, 1, (4, 8))
        np.testing.assert_allclose(d.mvm(R, x), x @ target, rtol=1e-5, atol=1e-5)
        t0 = d.time_s()
        assert d.advance(10.0) == pytest.approx(t0 + 10.0)


class _PowerCut(BaseException):
    """The process dies here (not an Exception: nothing may catch it)."""


def test_request_not_yet_durable_is_applied_once_on_retry(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    reqs = _requests(rng, 4)
    with SimDriver("hermes", seed=2) as ref:
        _run(ref, reqs)
        expected = ref.true_conductances(R)
    d = SimDriver("hermes", seed=2, state_dir=tmp_path)
    _run(d, reqs[:3])

    def die(*args: object, **kwargs: object) -> None:
        raise _PowerCut

    d.state_db.append_journal = die  # type: ignore[union-attr,method-assign]
    rid, region, counts = reqs[3]
    with pytest.raises(_PowerCut):  # applied in memory, never journalled, never answered
        d.apply_pulses(region, counts, request_id=rid)
    _crash(d)
    with SimDriver("hermes", seed=2, state_dir=tmp_path) as d2:
        d2.apply_pulses(region, counts, request_id=rid)  # the client's retry
        d2.apply_pulses(region, counts, request_id=rid)  # and a duplicate of it
        np.testing.assert_array_equal(d2.true_conductances(R), expected)


def test_wall_clock_state_dir_restores(tmp_path: Path, rng: np.random.Generator) -> None:
    reqs = _requests(rng, 3)
    d = SimDriver("hermes", seed=3, state_dir=tmp_path, clock="wall")
    _run(d, reqs)
    before = d.true_conductances(R)
    _crash(d)
    with SimDriver("hermes", seed=3, state_dir=tmp_path, clock="wall") as d2:
        assert d2.chips[0].clock.mode == "wall"
        after = d2.true_conductances(R)
        # the same pulses (write stream), applied a few ms later: drift differs negligibly
        np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-3)
        _run(d2, reqs)  # retries of recorded ids: nothing re-applied
        np.testing.assert_allclose(d2.true_conductances(R), after, rtol=1e-3, atol=1e-3)


def test_snapshot_and_restore_reproduce_the_state_exactly(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    reqs = _requests(rng, 6)
    with SimDriver("hermes", seed=6) as ref:
        _run(ref, reqs)
        expected = ref.true_conductances(R)
    with SimDriver("hermes", seed=6) as d:
        assert "snapshot" in d.info().capabilities
        _run(d, reqs[:3])
        d.snapshot(tmp_path / "snap")
        with pytest.raises(InvalidRequest, match="exists"):
            d.snapshot(tmp_path / "snap")
    url = f"sim://?preset=hermes&seed=6&restore={tmp_path / 'snap'}"
    from drivers import open_driver

    with open_driver(url) as restored:
        _run(restored, reqs)  # the first three are recorded: answered, not re-applied
        np.testing.assert_array_equal(restored.true_conductances(R), expected)
    with pytest.raises(InvalidRequest, match="holds preset 'hermes' seed 6"):
        SimDriver("hermes", seed=7, restore=tmp_path / "snap")
    with SimDriver("hermes", seed=6, state_dir=tmp_path / "st", restore=tmp_path / "snap") as d2:
        _run(d2, reqs[3:])
        np.testing.assert_array_equal(d2.true_conductances(R), expected)
    with pytest.raises(InvalidRequest, match="already holds"):
        SimDriver("hermes", seed=6, state_dir=tmp_path / "st", restore=tmp_path / "snap")


def test_compaction_keeps_the_reply_of_the_request_that_triggered_it(tmp_path) -> None:
    """A crash right after a compaction must not let a retried request apply twice."""
    region = Region(0, 0, 4, 0, 4)
    counts = np.ones((4, 4, 4), dtype=np.int32)
    drv = SimDriver("hermes", 5, state_dir=tmp_path, compact_every=1)
    try:
        drv.apply_pulses(region, counts, request_id="a")
        snap = drv.state_db.read_snapshot()  # type: ignore[union-attr]
        assert snap is not None
        assert [r["id"] for r in snap[1]["replies"]] == ["a"]
        assert drv.state_db.journal_size()[0] == 0  # type: ignore[union-attr]
        g = drv.true_conductances(region)
    finally:
        drv.close()
    with SimDriver("hermes", 5, state_dir=tmp_path) as again:  # the restarted server
        again.apply_pulses(region, counts, request_id="a")  # the client's retry
        np.testing.assert_array_equal(again.true_conductances(region), g)
