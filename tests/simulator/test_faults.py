"""Faults: rates honoured, fixed by the chip seed, stuck devices ignore writes."""

from __future__ import annotations

import numpy as np

from simulator import Chip, Region, get_preset

FULL = Region.full(0)
RATES = {1: 0.05, 2: 0.03, 3: 0.02}  # stuck at RESET, stuck at g_max, dead


def _params():
    return get_preset("hermes").replace(
        p_stuck_reset=RATES[1], p_stuck_gmax=RATES[2], p_dead=RATES[3]
    )


def test_fault_rates_are_honoured_and_fixed_by_seed() -> None:
    chip = Chip(0, _params(), seed=42)
    faults = chip.fault_map(FULL)
    n = faults.size
    for code, rate in RATES.items():
        frac = np.mean(faults == code)
        assert abs(frac - rate) < 4 * np.sqrt(rate * (1 - rate) / n), (code, frac)
    np.testing.assert_array_equal(Chip(0, _params(), seed=42).fault_map(FULL), faults)
    assert not np.array_equal(Chip(0, _params(), seed=43).fault_map(FULL), faults)
    assert not np.array_equal(Chip(1, _params(), seed=42).fault_map(Region.full(1)), faults)


def test_stuck_devices_do_not_move(rng: np.random.Generator) -> None:
    chip = Chip(0, _params(), seed=1)
    faults = chip.fault_map(FULL)
    g_max = chip.device_g_max_us(FULL)
    before = chip.true_conductances(FULL)
    assert np.all(before[faults == 3] == 0.0)
    np.testing.assert_allclose(before[faults == 2], g_max[faults == 2])
    np.testing.assert_allclose(before[faults == 1], chip.params.g_reset_us)
    counts = rng.integers(0, 4, (256, 256, 4))
    chip.apply_pulses(FULL, counts, rng.random((256, 256, 4)) < 0.3)
    chip.program(FULL, rng.uniform(-3, 3, (256, 256)).astype(np.float32))
    chip.advance(1e5)
    after = chip.true_conductances(FULL)
    stuck = faults != 0
    np.testing.assert_array_equal(after[stuck], before[stuck])
    healthy = (faults == 0) & (counts > 0)
    assert np.mean(after[healthy] != before[healthy]) > 0.99
