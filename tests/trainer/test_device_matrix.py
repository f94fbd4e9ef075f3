"""DeviceMatrix: the learning code's matrix interface on a chip region."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim import SimDriver
from hil.trainer.cells import CellMapping, net_conductance
from hil.trainer.device_matrix import DeviceMatrix, RequestIds, UpdateConfig
from protocols.region import Region


def _matrix(driver: SimDriver, w: np.ndarray, **kw: object) -> DeviceMatrix:
    info = driver.info()
    region = Region(0, 10, 10 + w.shape[0], 20, 20 + w.shape[1])
    mapping = CellMapping(2.0 * float(np.abs(w).max()), 0.5 * info.g_net_max_us)
    m = DeviceMatrix(
        "W",
        driver,
        region,
        mapping,
        trainable=True,
        ids=RequestIds("t"),
        update_cfg=UpdateConfig(**kw),
    )  # type: ignore[arg-type]
    m.program(w)
    return m


def test_ideal_forward_equals_the_software_product(rng: np.random.Generator) -> None:
    w = rng.normal(0, 0.2, size=(30, 17))
    with SimDriver("ideal", seed=1) as drv:
        m = _matrix(drv, w)
        np.testing.assert_allclose(m.read_weights(), w, rtol=1e-5, atol=1e-6)
        x = rng.normal(size=(5, 7, 30)).astype(np.float32)  # any leading axes, any scale
        np.testing.assert_allclose(m.matmul(x), x @ w, rtol=1e-4, atol=1e-5)
        spikes = (rng.random((40, 30)) < 0.3).astype(np.float32)
        np.testing.assert_allclose(m.matmul(spikes), spikes @ w, rtol=1e-4, atol=1e-5)


def test_ideal_update_keeps_device_plus_accumulator_equal_to_software(
    rng: np.random.Generator,
) -> None:
    """W_device + χ = W_0 + ΣΔW exactly on ideal devices: no update is lost or doubled."""
    w = rng.normal(0, 0.2, size=(12, 9))
    with SimDriver("ideal", seed=1) as drv:
        m = _matrix(drv, w, max_pulses_per_update=50)
        software = w.copy()
        for _ in range(6):
            delta = rng.normal(0, 0.02, size=w.shape)
            m.update(delta)
            software += delta
            assert np.all(np.abs(m.chi) < m.epsilon + 1e-12)
        np.testing.assert_allclose(m.read_weights() + m.chi, software, atol=1e-5)
        assert m.stats.pulses > 0 and m.stats.requests == 6


def test_pulses_go_to_the_side_of_the_update_sign() -> None:
    w = np.zeros((4, 4))
    w[0, 0] = 0.5
    with SimDriver("hermes", seed=3) as drv:
        m = _matrix(drv, w + 0.01)
        g0 = drv.true_conductances(m.region)
        delta = np.zeros((4, 4))
        delta[1, 1] = 5 * m.epsilon
        delta[2, 2] = -5 * m.epsilon
        m.update(delta)
        g1 = drv.true_conductances(m.region)
        assert g1[1, 1, :2].sum() > g0[1, 1, :2].sum()  # + side climbed
        np.testing.assert_allclose(g1[1, 1, 2:], g0[1, 1, 2:], rtol=1e-4)  # drift only
        assert g1[2, 2, 2:].sum() > g0[2, 2, 2:].sum()  # - side climbed
        np.testing.assert_allclose(g1[2, 2, :2], g0[2, 2, :2], rtol=1e-4)
        # one pulse per update at most: the rest stays in the accumulator
        assert m.chi[1, 1] == pytest.approx(4 * m.epsilon)
        assert m.stats.clipped == 2


def test_small_updates_accumulate_before_a_pulse() -> None:
    w = np.full((3, 3), 0.1)
    with SimDriver("hermes", seed=3) as drv:
        m = _matrix(drv, w)
        g0 = drv.true_conductances(m.region)
        m.update(np.full((3, 3), 0.4 * m.epsilon))
        np.testing.assert_array_equal(drv.true_conductances(m.region), g0)  # no request sent
        assert m.stats.requests == 0
        m.update(np.full((3, 3), 0.7 * m.epsilon))
        assert m.stats.requests == 1 and m.stats.pulses == 9
        np.testing.assert_allclose(m.chi, 0.1 * m.epsilon, rtol=1e-9)


class ReadOnlyReads(SimDriver):
    """Reads come back read-only, as from ``RemoteDriver`` (arrays over the reply frames)."""

    def _read_conductances(self, region):  # type: ignore[no-untyped-def]
        g = super()._read_conductances(region)
        g.flags.writeable = False
        return g


@pytest.mark.parametrize("driver", [SimDriver, ReadOnlyReads])
def test_refresh_lowers_saturated_cells_and_keeps_the_net_weight(driver: type) -> None:
    w = np.full((6, 6), 0.05)
    with driver("hermes", seed=5) as drv:
        m = _matrix(drv, w, max_pulses_per_update=20)
        for sign in (1, 1, -1, -1) * 4:  # the round-robin counter alternates A and B
            m.update(np.full((6, 6), sign * 20 * m.epsilon))
        before = drv.true_conductances(m.region)
        n = m.refresh()
        after = drv.true_conductances(m.region)
        assert n > 0
        assert after.sum() < before.sum()
        err = np.abs(net_conductance(after) - net_conductance(before))
        assert np.median(err) < 1.5  # µS: re-programmed to within programming noise


def test_drift_compensation_restores_the_output_scale(rng: np.random.Generator) -> None:
    w = rng.normal(0, 0.2, size=(40, 20))
    x = (rng.random((64, 40)) < 0.5).astype(np.float32)
    with SimDriver("hermes", seed=7) as drv:
        m = _matrix(drv, w)
        probe = rng.choice([-1.0, 1.0], size=(16, 40)).astype(np.float32)
        fresh = m.matmul(x)
        ref = m.calibrate(probe)
        drv.advance(86400.0)
        drifted = m.matmul(x)
        m.compensate(probe, ref, "global")
        compensated = m.matmul(x)
        gain = lambda y: float(np.abs(y).mean() / np.abs(fresh).mean())  # noqa: E731
        assert gain(drifted) < 0.85  # a day of drift shrinks the outputs
        assert abs(gain(compensated) - 1.0) < 0.05


def test_all_zero_rows_are_not_sent_and_give_exactly_zero(rng: np.random.Generator) -> None:
    """Zero rows (padding, silent spike vectors) skip the device; the other rows get exactly
    what sending only them gives (same chip seed, same read-noise stream)."""
    w = rng.normal(0, 0.2, size=(30, 17))
    x = (rng.random((6, 8, 30)) < 0.3).astype(np.float32)
    x[:, 5:] = 0.0  # padding
    x[2, 1] = 0.0  # a silent step
    nonzero = np.abs(x).max(axis=-1) > 0
    with SimDriver("hermes", seed=3) as a, SimDriver("hermes", seed=3) as b:
        ma, mb = _matrix(a, w), _matrix(b, w)
        y = ma.matmul(x)
        assert y.shape == (6, 8, 17)
        assert np.all(y[~nonzero] == 0.0)
        assert ma.stats.mvm_rows == nonzero.sum() and ma.stats.mvm_rows_skipped == (~nonzero).sum()
        np.testing.assert_array_equal(y[nonzero], mb.matmul(x[nonzero]))
        assert np.abs(y[nonzero]).max() > 0
        with pytest.raises(Exception, match="NaN"):
            ma.matmul(np.full((2, 30), np.nan, np.float32))


def test_an_optimiser_step_does_not_read_the_device_back(rng: np.random.Generator) -> None:
    """The update path sends pulses only: no conductance read per step (a full read of the
    region costs 8 bytes per cell on a board's serial link)."""
    from hil.learning import OptimConfig, Optimizer

    class CountingSim(SimDriver):
        reads = 0

        def _read_conductances(self, region):  # type: ignore[no-untyped-def]
            CountingSim.reads += 1
            return super()._read_conductances(region)

    w = rng.normal(0, 0.2, size=(12, 9))
    with CountingSim("hermes", seed=1) as drv:
        m = _matrix(drv, w)
        before = CountingSim.reads
        opt = Optimizer({"W": m}, OptimConfig("sgd", lr=1.0))
        for _ in range(3):
            opt.step({"W": rng.normal(0, 0.5, size=w.shape)})
        assert CountingSim.reads == before
        assert m.stats.pulses > 0
