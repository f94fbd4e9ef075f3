"""The driver contract's validation and idempotency, on the in-test FakeDriver."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import DriverError, InvalidRequest, LimitExceeded
from drivers.base import ReplyCache, fingerprint
from protocols import PulseReport, Region
from tests.drivers.fakes import G_MIN_US, STEP_US, FakeDriver

R = Region(0, 2, 6, 1, 4)


@pytest.fixture
def drv() -> FakeDriver:
    with FakeDriver() as d:
        yield d


def test_mvm_is_x_times_gnet(drv: FakeDriver, rng: np.random.Generator) -> None:
    counts = rng.integers(0, 5, size=(4, 3, 4))
    drv.apply_pulses(R, counts)
    g = G_MIN_US + counts * STEP_US
    net = ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2
    x = rng.uniform(-1, 1, size=(5, 4))
    y = drv.mvm(R, x)
    assert y.dtype == np.float32 and y.shape == (5, 3)
    np.testing.assert_allclose(y, x @ net, rtol=1e-5, atol=1e-5)
    yt = drv.mvm(R, x[:, :3], transpose=True)
    np.testing.assert_allclose(yt, x[:, :3] @ net.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "region",
    [Region(2, 0, 1, 0, 1), Region(0, 0, 17, 0, 1), Region(0, 0, 1, 0, 9), (0, 3, 3, 0, 1), "x"],
)
def test_bad_regions_rejected(drv: FakeDriver, region: object) -> None:
    with pytest.raises(InvalidRequest):
        drv.read_conductances(region)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "err"),
    [
        (np.zeros((1, 3)), InvalidRequest),  # wrong width
        (np.zeros(4), InvalidRequest),  # 1-D
        (np.zeros((1, 4), dtype=np.int32), InvalidRequest),  # dtype
        (np.full((1, 4), 1.5), InvalidRequest),  # out of range
        (np.full((1, 4), np.nan), InvalidRequest),
        (np.zeros((65, 4)), LimitExceeded),  # batch limit
        (np.zeros((0, 4)), InvalidRequest),
    ],
)
def test_bad_mvm_inputs_rejected(drv: FakeDriver, x: np.ndarray, err: type) -> None:
    with pytest.raises(err):
        drv.mvm(R, x)
    assert drv.hook_calls == []


def test_bad_pulses_rejected(drv: FakeDriver) -> None:
    shape = (4, 3, 4)
    for bad, err in [
        (np.ones(shape, dtype=np.float32), InvalidRequest),
        (np.ones(shape, dtype=bool), InvalidRequest),
        (np.ones((4, 3, 3), dtype=int), InvalidRequest),
        (-np.ones(shape, dtype=int), InvalidRequest),
        (np.full(shape, 21), LimitExceeded),
    ]:
        with pytest.raises(err):
            drv.apply_pulses(R, bad)
    with pytest.raises(InvalidRequest, match="reset_mask"):
        drv.apply_pulses(R, np.zeros(shape, int), np.zeros(shape, int))
    assert drv.hook_calls == []


def test_program_validation(drv: FakeDriver) -> None:
    t = np.full((4, 3), 2.5)
    with pytest.raises(InvalidRequest, match="beyond the largest"):
        drv.program(R, t * 5, tolerance_us=0.5, max_iterations=5)
    with pytest.raises(InvalidRequest, match="tolerance_us"):
        drv.program(R, t, tolerance_us=0.0, max_iterations=5)
    with pytest.raises(LimitExceeded):
        drv.program(R, t, tolerance_us=0.5, max_iterations=51)
    rep = drv.program(R, t, tolerance_us=0.5, max_iterations=5)
    assert rep.converged
    g = drv.read_conductances(R)
    np.testing.assert_allclose(((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2, t)


def test_retried_request_id_is_not_applied_twice(drv: FakeDriver) -> None:
    counts = np.ones((4, 3, 4), dtype=np.int64)
    first = drv.apply_pulses(R, counts, request_id="step-1")
    again = drv.apply_pulses(R, counts, request_id="step-1")
    assert again == first
    assert drv.hook_calls.count("apply_pulses") == 1
    np.testing.assert_allclose(drv.read_conductances(R), G_MIN_US + STEP_US)
    with pytest.raises(InvalidRequest, match="already used"):
        drv.apply_pulses(R, counts * 2, request_id="step-1")
    with pytest.raises(InvalidRequest, match="already used"):
        drv.reset(R, request_id="step-1")


def test_advance_and_time(drv: FakeDriver) -> None:
    assert drv.advance(2.5, request_id="a") == 2.5
    assert drv.advance(2.5, request_id="a") == 2.5
    assert drv.time_s() == 2.5
    with pytest.raises(InvalidRequest, match="cannot go back"):
        drv.advance(-1.0)


def test_closed_driver_refuses(drv: FakeDriver) -> None:
    drv.close()
    drv.close()
    with pytest.raises(DriverError, match="closed"):
        drv.read_conductances(R)


def test_reply_cache_is_bounded_and_round_trips() -> None:
    cache = ReplyCache(capacity=2)
    rep = PulseReport(set_pulses=1, resets=0, time_s=0.0)
    for rid in "abc":
        cache.put(rid, "apply_pulses", "fp", rep)
    assert len(cache) == 2 and cache.get("a", "apply_pulses", "fp") is None
    other = ReplyCache(capacity=2)
    other.load_records(cache.to_records())
    assert other.get("c", "apply_pulses", "fp") == rep


def test_pulse_fingerprint_is_of_the_counts_values() -> None:
    """apply_pulses fingerprints its validated counts as uint8 when they fit: the same
    counts are the same request, any changed count another (and counts past 255 stay
    int32, still distinct)."""
    from drivers.base import _hashable_counts

    a = np.zeros((2, 2, 4), dtype=np.int32)
    b = a.copy()
    b[1, 0, 3] = 7
    assert _hashable_counts(b).dtype == np.uint8
    np.testing.assert_array_equal(_hashable_counts(b), b)
    fp = [fingerprint("apply_pulses", R, _hashable_counts(c), None) for c in (a, b, b.copy())]
    assert fp[0] != fp[1] and fp[1] == fp[2]
    big = b.copy()
    big[0, 0, 0] = 300
    assert _hashable_counts(big).dtype == np.int32
    assert fingerprint("v", R, _hashable_counts(big)) != fingerprint("v", R, _hashable_counts(b))


def test_fingerprint_depends_on_arrays() -> None:
    a = np.zeros((2, 2, 4), dtype=np.int32)
    assert fingerprint("v", R, a) == fingerprint("v", R, a.copy())
    assert fingerprint("v", R, a) != fingerprint("v", R, a + 1)
