"""Device statistics against the formulas of ../shared/docs/pcm-physics.md (>= 20,000 devices).

Expected values are computed here straight from the doc's formulas, independently of
``simulator.physics``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocols.cell import net_conductance
from simulator import Chip, Region, get_preset

FULL = Region.full(0)
A_PLUS = 0


def _clean(name: str, **changes: object):
    """A preset without faults and device-to-device spread (so formulas apply per device)."""
    return get_preset(name).replace(
        p_stuck_reset=0.0,
        p_stuck_gmax=0.0,
        p_dead=0.0,
        g_max_spread=0.0,
        step_spread=0.0,
        **changes,
    )


def sigma_prog(g_us: float, g_max: float) -> float:
    g = g_us / g_max
    return max(0.26348 + 1.9650 * g - 1.1731 * g * g, 0.0) * g_max / 25.0


def nu_params(g_us: float, g_max: float) -> tuple[float, float]:
    lg = math.log(max(g_us / g_max, 1e-7))
    mu = min(max(-0.0155 * lg + 0.0244, 0.049), 0.1)
    sd = min(max(-0.0125 * lg - 0.0059, 0.008), 0.045)
    return mu, sd


def folded_normal_grid(mu: float, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights of |N(mu, sd)|."""
    z = np.linspace(-9, 9, 20001)
    w = np.exp(-0.5 * z * z)
    w /= w.sum()
    return np.abs(mu + sd * z), w


def drift_mean_factor(mu: float, sd: float, age_s: float, t0: float = 20.0) -> float:
    nu, w = folded_normal_grid(mu, sd)
    return float(np.sum(w * ((age_s + t0) / t0) ** (-nu)))


@pytest.mark.parametrize(
    ("preset", "levels"),
    [("hermes", (1.0, 2.5, 4.0, 6.0, 8.0)), ("aihwkit-pcm", (2.0, 5.0, 10.0, 15.0, 20.0))],
)
def test_programming_nu_and_drift_statistics(preset: str, levels: tuple[float, ...]) -> None:
    params = _clean(preset)
    g_max = params.g_max_us
    for level, a_t in enumerate(levels):
        chip = Chip(0, params, seed=100 + level)
        # device A+ of every cell is filled to a_t = 2 T + g_reset (simulator.programming)
        target = np.full((256, 256), (a_t - params.g_reset_us) / 2, dtype=np.float32)
        result = chip.program(FULL, target, tolerance_us=1e3)
        assert result.iterations == 1 and result.n_unconverged == 0
        t_prog = chip.time_s
        g = chip.true_conductances(FULL)[..., A_PLUS].ravel().astype(np.float64)
        assert g.size >= 20_000
        assert g.mean() == pytest.approx(a_t, rel=0.03)
        assert g.std() == pytest.approx(sigma_prog(a_t, g_max), rel=0.03)
        nu = chip._pop.arrays["nu"][..., A_PLUS].ravel().astype(np.float64)
        mu, sd = nu_params(a_t, g_max)
        nodes, w = folded_normal_grid(mu, sd)
        nu_mean = float(np.sum(w * nodes))
        nu_std = math.sqrt(float(np.sum(w * nodes**2)) - nu_mean**2)
        assert nu.mean() == pytest.approx(nu_mean, rel=0.03)
        assert nu.std() == pytest.approx(nu_std, rel=0.03)
        for age in (3600.0, 86400.0):
            chip.advance_to(t_prog + age)
            g_t = chip.true_conductances(FULL)[..., A_PLUS].astype(np.float64)
            assert g_t.mean() == pytest.approx(a_t * drift_mean_factor(mu, sd, age), rel=0.03)


def reference_set_mc(pulses: list[int], g_max: float, n: int, seed: int) -> dict[int, tuple]:
    """Independent Monte Carlo of the §2 SET model from RESET."""
    rng = np.random.default_rng(seed)
    g = rng.normal(0.1, 0.01, n)
    p = np.ones(n)
    out = {}
    for k in range(1, max(pulses) + 1):
        p = p * math.exp(-1 / 2.6)
        mu = -0.084 * g + 0.88 + 1.40 * p
        sd = 0.091 * g + 0.26 + 2.15 * p
        g = np.clip(g + rng.normal(mu, sd), 0.1, g_max)
        if k in pulses:
            out[k] = (g.mean(), g.std())
    return out


@pytest.mark.parametrize("g_max", [10.35, 12.0])
def test_set_pulse_means_match_reference_monte_carlo(g_max: float) -> None:
    chip = Chip(0, _clean("hermes", g_max_us=g_max), seed=7)
    ref = reference_set_mc([5, 10, 20], g_max, 200_000, seed=8)
    done = 0
    for k in (5, 10, 20):
        chip.apply_pulses(FULL, np.full((256, 256, 4), k - done, dtype=np.int16))
        done = k
        g = chip.true_conductances(FULL).astype(np.float64)
        assert g.mean() == pytest.approx(ref[k][0], rel=0.01)
        assert g.std() == pytest.approx(ref[k][1], rel=0.03)
    if g_max == 12.0:  # the doc's table (G_max = 12 µS) after 20 pulses: 8.91 +- 1.97
        assert g.mean() == pytest.approx(8.91, rel=0.01)


def test_read_noise_matches_doc_check() -> None:
    """aihwkit-pcm: a 10 µS target read 1 s after programming is 9.98 +- 1.09 µS (§5)."""
    params = _clean("aihwkit-pcm")
    chip = Chip(0, params, seed=3)
    a_t = (10.0 - params.g_reset_us) / 2  # device A+ target 2 T + g_reset = 10 µS
    chip.program(FULL, np.full((256, 256), a_t, np.float32), tolerance_us=1e3)
    chip.advance(1.0)
    g = chip.read_conductances(FULL)[..., A_PLUS].astype(np.float64)
    assert g.mean() == pytest.approx(9.98, rel=0.01)
    assert g.std() == pytest.approx(1.09, rel=0.03)


def test_mvm_noise_is_exact_in_distribution(rng: np.random.Generator) -> None:
    """Output-domain noise has the variance of per-device sampling (no DAC/ADC here)."""
    params = get_preset("hermes").replace(dac_bits=None, adc_bits=None)
    chip = Chip(0, params, seed=5)
    region = Region(0, 0, 48, 0, 24)
    chip.program(region, rng.uniform(-4, 4, region.shape).astype(np.float32))
    chip.advance(60.0)
    x = rng.uniform(-1, 1, (1, 48)).astype(np.float32)
    reps = 4000
    y = chip.mvm(region, np.repeat(x, reps, axis=0)).astype(np.float64)
    per_device = np.stack(
        [x[0] @ net_conductance(chip.read_conductances(region)) for _ in range(reps)]
    ).astype(np.float64)
    exact_mean = x[0] @ net_conductance(chip.true_conductances(region))
    np.testing.assert_allclose(y.mean(0), exact_mean, atol=4 * y.std(0).max() / reps**0.5)
    ratio = y.var(0) / per_device.var(0)
    assert np.all(np.abs(ratio - 1) < 0.15)  # each column: 4000 samples, ~3 % std
    assert abs(ratio.mean() - 1) < 0.03


@pytest.mark.parametrize("shape", [(64, 256), (3, 5), (1, 7)])
def test_fast_normal_raw_is_fast_normal_from_raw_bits(shape: tuple[int, int]) -> None:
    """The MVM read-noise sampler draws the same uniforms as ``rng.random(float32)`` (so the
    read stream is unchanged), and its samples are standard normal."""
    from simulator import physics

    a = np.random.Generator(np.random.SFC64(5))
    b = np.random.Generator(np.random.SFC64(5))
    for _ in range(3):
        np.testing.assert_array_equal(
            physics.fast_normal(a, shape), physics.fast_normal_raw(b, shape)
        )
    z = physics.fast_normal_raw(b, (200_000,))
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    assert abs(float((np.abs(z) > 2.0).mean()) - 0.0455) < 0.003


@pytest.mark.parametrize("shape", [(64, 256), (3, 5), (1, 7)])
def test_fast_normal_raw_into_scratch_is_the_same_draw(shape: tuple[int, int]) -> None:
    """With ``out`` (the MVM's scratch buffer) the samples and the stream's position are
    exactly those of the allocating form; the scratch's stale contents do not leak in."""
    from simulator import physics

    a = np.random.Generator(np.random.SFC64(9))
    b = np.random.Generator(np.random.SFC64(9))
    scratch = np.full(shape[0] * shape[1] + 5, np.nan, dtype=np.float32)
    for _ in range(3):
        z = physics.fast_normal_raw(b, shape, out=scratch)
        assert z.shape == shape and np.shares_memory(z, scratch)
        np.testing.assert_array_equal(physics.fast_normal_raw(a, shape), z)
    np.testing.assert_array_equal(a.bit_generator.random_raw(4), b.bit_generator.random_raw(4))
