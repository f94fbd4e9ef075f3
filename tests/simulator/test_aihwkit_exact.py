"""The ``aihwkit-pcm`` preset against aihwkit's ``PCMLikeNoiseModel`` formulas, 7 levels x 4 times.

The reference below is an independent Monte Carlo of aihwkit's formulas
(``aihwkit/inference/noise/pcm.py``, pcm-physics §3-5; no aihwkit install), with
``g_max = 25 µS``, ``t0 = 20 s``, ``t_read = 250 ns``, target ``g_t``, ``g = g_t/g_max``:

    G_prog = max(g_t + sigma_prog xi1, 0),  sigma_prog = (0.26348 + 1.9650 g - 1.1731 g^2) g_max/25
    nu     = |mu_nu + sigma_nu xi2|,  g' = max(g, 1e-7)
             mu_nu = clip(-0.0155 ln g' + 0.0244, 0.049, 0.1)
             sigma_nu = clip(-0.0125 ln g' - 0.0059, 0.008, 0.045)
    t      = t_inference + t0,  G_d = G_prog (t/t0)^(-nu)
    Q_s    = min(0.0088 / max((G_prog/g_max)^0.65, 1e-3), 0.2)
    G(t)   = max(G_d + |G_d| Q_s sqrt(ln((t + t_read)/(2 t_read))) xi3, 0)
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator import Chip, Region, get_preset

FULL = Region.full(0)
A_PLUS = 0
G_MAX, T0, T_READ = 25.0, 20.0, 250e-9
LEVELS_US = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0)
TIMES_S = (1.0, 3600.0, 86400.0, 3.15e7)


def aihwkit_reads(g_t: float, t_inference: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Monte Carlo of PCMLikeNoiseModel: ``n`` devices programmed to ``g_t``, read once."""
    g = g_t / G_MAX
    sig_prog = (0.26348 + 1.9650 * g - 1.1731 * g * g) * G_MAX / 25.0
    g_prog = np.maximum(g_t + sig_prog * rng.standard_normal(n), 0.0)
    lg = np.log(max(g, 1e-7))
    mu = np.clip(-0.0155 * lg + 0.0244, 0.049, 0.1)
    sd = np.clip(-0.0125 * lg - 0.0059, 0.008, 0.045)
    nu = np.abs(mu + sd * rng.standard_normal(n))
    t = t_inference + T0
    g_d = g_prog * (t / T0) ** (-nu)
    q_s = np.minimum(0.0088 / np.maximum((g_prog / G_MAX) ** 0.65, 1e-3), 0.2)
    sig = q_s * np.sqrt(np.log((t + T_READ) / (2 * T_READ)))
    return np.maximum(g_d + np.abs(g_d) * sig * rng.standard_normal(n), 0.0)


def test_preset_is_fault_free_and_faults_stay_available() -> None:
    p = get_preset("aihwkit-pcm")
    assert (p.p_stuck_reset, p.p_stuck_gmax, p.p_dead) == (0.0, 0.0, 0.0)
    assert p.g_max_us == G_MAX and p.g_reset_us == 0.0 and p.g_net_max_us == G_MAX
    chip = Chip(0, p, seed=1)
    assert not chip.fault_map(FULL).any()
    faulty = Chip(0, "aihwkit-pcm-faults", seed=1)
    frac = np.count_nonzero(faulty.fault_map(FULL)) / (256 * 256 * 4)
    hermes = get_preset("hermes")
    assert frac == pytest.approx(hermes.p_stuck_reset + hermes.p_stuck_gmax + hermes.p_dead, 0.1)


@pytest.mark.parametrize("level", LEVELS_US)
def test_device_reads_match_pcmlike_noise_model(level: float) -> None:
    """Device A+ of every cell programmed one-shot to ``level``; reads at 4 times."""
    chip = Chip(0, "aihwkit-pcm", seed=int(level * 10) + 1)
    # device A+ is targeted to 2 T + g_reset = 2 T (simulator.programming, g_reset = 0)
    target = np.full((256, 256), level / 2, np.float32)
    result = chip.program(FULL, target, tolerance_us=1e3)
    assert result.iterations == 1
    t_prog = chip.time_s
    rng = np.random.default_rng(1000 + int(level))
    for t_inf in TIMES_S:
        chip.advance_to(t_prog + t_inf)
        g = chip.read_conductances(FULL)[..., A_PLUS].ravel().astype(np.float64)
        ref = aihwkit_reads(level, t_inf, 1_000_000, rng)
        se = np.sqrt(ref.var() / g.size + ref.var() / ref.size)
        assert abs(g.mean() - ref.mean()) < 4 * se, (level, t_inf, g.mean(), ref.mean())
        assert g.std() == pytest.approx(ref.std(), rel=0.03), (level, t_inf)


def test_every_aihwkit_target_is_reachable_with_default_programming() -> None:
    """Net targets up to +-g_max (each device up to g_max). Read noise at 25 µS is ~0.9 µS
    20 s after programming, so the verify tolerance is 1 µS."""
    chip = Chip(0, "aihwkit-pcm", seed=4)
    region = Region(0, 0, 64, 0, 64)
    target = np.linspace(-G_MAX, G_MAX, 64 * 64, dtype=np.float32).reshape(64, 64)
    result = chip.program(region, target, tolerance_us=1.0, max_iterations=50)
    assert result.n_unconverged == 0
    net = chip.true_conductances(region)
    net = ((net[..., 0] + net[..., 1]) - (net[..., 2] + net[..., 3])) / 2
    assert np.sqrt(np.mean((net - target) ** 2)) < 0.6 and abs(net - target).max() < 2.5
    top = target >= 24.0
    assert net[top].mean() == pytest.approx(target[top].mean(), abs=0.2)
