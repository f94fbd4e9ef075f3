"""Pieces of the characterisation: fault classes, ADC inference, folded-normal inversion."""

from __future__ import annotations

import numpy as np
import pytest

from hil.characterize import faults as F
from hil.characterize.fit_noise import _unfold, clipped_log_law


def test_fault_classes_from_reset_and_set_reads() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    r0 = 0.1 + 0.01 * rng.standard_normal(n)
    rk = 8.0 + 2.0 * rng.standard_normal(n)
    truth = np.zeros(n, np.uint8)
    truth[:40], truth[40:60], truth[60:80] = F.STUCK_RESET, F.STUCK_GMAX, F.DEAD
    rk[:40] = r0[:40]
    r0[40:60] = rk[40:60] = 10.3
    r0[60:80] = rk[60:80] = 0.0
    curve = np.stack([r0, rk])
    assert np.array_equal(F.classify(r0, curve), truth)
    fr = F.fractions(truth)
    assert fr == {"stuck_reset": 0.01, "stuck_gmax": 0.005, "dead": 0.005}
    lo, hi = F.ci95(0.01, n)
    assert lo < 0.01 < hi and hi - lo < 0.01


def test_dead_and_stuck_reset_merge_when_reset_is_zero() -> None:
    r0 = np.zeros(100)
    rk = np.full(100, 20.0)
    rk[:5] = 0.0
    codes = F.classify(r0, np.stack([r0, rk]))
    assert (codes[:5] == F.STUCK_RESET).all() and (codes[5:] == F.OK).all()


@pytest.mark.parametrize(("mu", "sigma"), [(0.05, 0.04), (0.1, 0.045), (0.06, 0.01)])
def test_folded_normal_inversion(mu: float, sigma: float) -> None:
    x = np.abs(mu + sigma * np.random.default_rng(1).standard_normal(2_000_000))
    m, s = _unfold(float(x.mean()), float(x.std()))
    assert m == pytest.approx(mu, rel=0.02) and s == pytest.approx(sigma, rel=0.02)


def test_clipped_log_law_recovers_pcmlike_mu_nu() -> None:
    g = np.array([0.01, 0.03, 0.07, 0.15, 0.3, 0.6, 0.9])
    y = np.clip(-0.0155 * np.log(g) + 0.0244, 0.049, 0.1)
    law = clipped_log_law(g, y, np.full(g.size, 1e-3), np.array([-0.01, 0.02, 0.04, 0.09]))
    assert np.abs(law.residuals).max() < 1e-4


def test_noise_free_reads_fit_no_read_noise() -> None:
    """An ideal chip (reads without noise) gives A = 0, not a failed fit."""
    from hil.characterize.fit_noise import prog_noise, read_noise

    m = [np.full((2, 30), lv) + np.linspace(0, 0.01, 30) for lv in (1.0, 4.0, 8.0)]
    v = [np.zeros((2, 30)) for _ in m]
    law = read_noise(np.array([0.0, 60.0]), m, v, 20.0, 250e-9)
    assert np.exp(law.values[0]) == 0.0
    pn = prog_noise(np.array([1.0, 4.0, 8.0]), [x[0] for x in m], [x[0] for x in v], 4, 10.0)
    assert np.all(np.isfinite(pn.values))
