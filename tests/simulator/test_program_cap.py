"""Program-and-verify never exceeds its iteration cap and converges on hermes at the
preset's tolerance; cells with stuck or dead devices are counted apart (#13 item 6)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import Chip, Region
from simulator.presets import get_preset


def _targets(preset: str, seed: int = 0) -> np.ndarray:
    p = get_preset(preset)
    w = np.random.default_rng(seed).standard_normal((150, 88))
    reach = 0.8 * ((1 + p.fill_fraction) / 2 * p.g_max_us - p.g_reset_us)
    return (w / np.abs(w).max() * reach).astype(np.float32)


@pytest.mark.parametrize("cap", [1, 2, 3, 5, 20])
def test_iterations_never_exceed_the_cap(cap: int) -> None:
    chip = Chip(0, "hermes", seed=3)
    res = chip.program(Region(0, 0, 150, 0, 88), _targets("hermes"), 0.3, cap)
    assert 1 <= res.iterations <= cap


@pytest.mark.parametrize("preset", ["hermes", "aihwkit-pcm", "aihwkit-pcm-faults"])
def test_converges_at_the_presets_tolerance_within_20_iterations(preset: str) -> None:
    p = get_preset(preset)
    chip = Chip(0, p, seed=1)
    res = chip.program(Region(0, 0, 150, 0, 88), _targets(preset), None, 20)
    assert res.n_unconverged == 0 and res.iterations <= 20
    assert res.rms_error_us < p.program_tolerance_us
    faulty_devices = p.p_stuck_reset + p.p_stuck_gmax + p.p_dead
    if faulty_devices:  # some cells have a device no iteration can move
        assert res.n_faulty > 0
    else:
        assert res.n_faulty == 0
