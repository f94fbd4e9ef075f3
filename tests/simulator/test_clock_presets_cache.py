"""Clock modes, presets and the MVM cache approximation."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.cell import net_conductance
from simulator import Chip, Clock, DeviceParams, InputRangeError, PresetError, Region, get_preset


def test_virtual_clock_ticks_with_modelled_latencies() -> None:
    chip = Chip(0, "hermes", seed=0)
    region = Region(0, 0, 8, 0, 8)
    assert chip.time_s == 0.0
    chip.mvm(region, np.zeros((10, 8)))
    assert chip.time_s == pytest.approx(10 * chip.params.mvm_latency_s)
    t = chip.time_s
    chip.apply_pulses(region, np.full((8, 8, 4), 3))
    assert chip.time_s == pytest.approx(t + 3 * chip.params.pulse_time_s)
    assert chip.advance(5.0) == pytest.approx(t + 3e-6 + 5.0)
    with pytest.raises(InputRangeError, match="monotonic"):
        chip.advance_to(1.0)
    with pytest.raises(InputRangeError):
        chip.advance(float("nan"))


def test_wall_clock_follows_the_injected_time_source() -> None:
    now = [100.0]
    clock = Clock("wall", 2.0, monotonic=lambda: now[0])
    assert clock.time_s == 2.0
    now[0] = 103.5
    assert clock.time_s == pytest.approx(5.5)
    clock.tick(1.0)  # modelled latencies do not move wall time
    assert clock.time_s == pytest.approx(5.5)
    clock.advance(10.0)  # explicit fast-forward does
    assert clock.time_s == pytest.approx(15.5)
    chip = Chip(0, "ideal", clock=clock)
    assert chip.time_s == pytest.approx(15.5)
    with pytest.raises(InputRangeError, match="mode"):
        Clock("sundial")


def test_presets_and_their_errors() -> None:
    assert get_preset().name == "hermes" and get_preset().g_max_us == pytest.approx(10.35)
    pcm = get_preset("aihwkit-pcm")
    assert pcm.g_max_us == 25.0
    ideal = get_preset("ideal")
    assert not ideal.drift and not ideal.read_noise and ideal.dac_bits is None
    with pytest.raises(PresetError, match="aihwkit-pcm, aihwkit-pcm-faults, hermes, ideal"):
        get_preset("hermez")
    with pytest.raises(PresetError, match="g_max_us"):
        DeviceParams(g_max_us=-1.0)
    with pytest.raises(PresetError, match="dac_bits"):
        get_preset().replace(dac_bits=40)
    assert DeviceParams.from_dict(pcm.to_dict()) == pcm
    with pytest.raises(PresetError, match="unknown"):
        DeviceParams.from_dict({"bogus": 1})


def test_cache_is_reused_within_tolerance_and_rebuilt_beyond(rng: np.random.Generator) -> None:
    params = get_preset("hermes").replace(read_noise=False, dac_bits=None, adc_bits=None)
    chip = Chip(0, params, seed=4)
    region = Region(0, 0, 64, 0, 64)
    chip.program(region, rng.uniform(-4, 4, region.shape).astype(np.float32))
    chip.advance(30.0)
    eye = np.eye(64, dtype=np.float32)
    first = chip.mvm(region, eye)
    chip.advance(1e-3)  # tiny: reuses the cache
    reused = chip.mvm(region, eye)
    np.testing.assert_array_equal(reused, first)
    exact = net_conductance(chip.true_conductances(region))
    np.testing.assert_allclose(reused, exact, rtol=1e-4, atol=1e-5)  # documented tolerance
    chip.advance(3600.0)  # drift is visible: the cache must be rebuilt
    later = chip.mvm(region, eye)
    np.testing.assert_allclose(
        later, net_conductance(chip.true_conductances(region)), rtol=1e-5, atol=1e-5
    )
    assert np.mean(np.abs(later)) < 0.9 * np.mean(np.abs(first))
    counts = np.zeros((64, 64, 4), dtype=np.int32)
    counts[0, 0, 0] = 1  # any write invalidates the overlapping cache
    chip.apply_pulses(region, counts)
    np.testing.assert_allclose(
        chip.mvm(region, eye), net_conductance(chip.true_conductances(region)), rtol=1e-5, atol=1e-5
    )
