"""Chip API: ideal exactness, save/load continuation, validation errors, RNG streams."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.cell import net_conductance
from simulator import (
    Chip,
    ChipStateError,
    InputRangeError,
    Region,
    RegionError,
    ShapeError,
    SimulatorError,
    get_preset,
)


def _targets(rng: np.random.Generator, region: Region, g: float) -> np.ndarray:
    return rng.uniform(-g, g, region.shape).astype(np.float32)


def test_ideal_program_writes_exactly_and_mvm_is_exact(rng: np.random.Generator) -> None:
    chip = Chip(0, "ideal", seed=3)
    region = Region(0, 10, 160, 20, 108)
    target = _targets(rng, region, chip.params.g_net_max_us)
    result = chip.program(region, target)
    g_net = net_conductance(chip.true_conductances(region))
    np.testing.assert_allclose(g_net, target, rtol=1e-6, atol=1e-6)
    assert result.max_error_us <= 1e-5
    x = rng.uniform(-1, 1, (17, region.nrows))
    y = chip.mvm(region, x)
    assert y.dtype == np.float32 and y.shape == (17, region.ncols)
    np.testing.assert_allclose(y, x.astype(np.float32) @ g_net, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y, x @ target.astype(np.float64), rtol=1e-4, atol=1e-3)
    xt = rng.uniform(-1, 1, (5, region.ncols))
    np.testing.assert_allclose(
        chip.mvm_t(region, xt), xt.astype(np.float32) @ g_net.T, rtol=1e-5, atol=1e-4
    )


def _drive(chip: Chip, region: Region, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for step in range(3):
        out.append(chip.mvm(region, rng.uniform(-1, 1, (8, region.nrows))))
        counts = rng.integers(0, 3, (*region.shape, 4))
        reset = rng.random((*region.shape, 4)) < 0.05
        chip.apply_pulses(region, counts, reset)
        chip.advance(10.0**step)
        out.append(chip.read_conductances(region))
        out.append(chip.true_conductances(region))
    return out


def test_save_load_continues_exactly(tmp_path, rng: np.random.Generator) -> None:
    region = Region(1, 0, 64, 0, 32)
    a = Chip(1, "hermes", seed=11)
    a.program(region, _targets(rng, region, 4.0))
    a.advance(100.0)
    a.mvm(region, rng.uniform(-1, 1, (4, 64)))  # builds a cache that must survive saving
    path = a.save(tmp_path / "chip1.npz")
    b = Chip.load(path)
    assert b.time_s == a.time_s and b.chip_id == 1
    for ya, yb in zip(_drive(a, region, 5), _drive(b, region, 5), strict=True):
        np.testing.assert_array_equal(ya, yb)


def test_reads_do_not_change_written_state(rng: np.random.Generator) -> None:
    region = Region(0, 0, 32, 0, 32)
    a, b = Chip(0, seed=2), Chip(0, seed=2)
    target = _targets(rng, region, 3.0)
    a.program(region, target)
    b.program(region, target)
    for _ in range(5):
        a.mvm(region, np.zeros((3, 32)))
        a.read_conductances(region)
    b.advance_to(a.time_s)
    counts = rng.integers(0, 4, (32, 32, 4))
    a.apply_pulses(region, counts)
    b.apply_pulses(region, counts)
    np.testing.assert_array_equal(a.true_conductances(region), b.true_conductances(region))


@pytest.mark.parametrize(
    "args",
    [
        (0, 0, 0, 0, 10),
        (0, 5, 3, 0, 10),
        (0, 0, 257, 0, 10),
        (0, -1, 10, 0, 10),
        (0, 0.0, 10, 0, 10),
        (-1, 0, 10, 0, 10),
    ],
)
def test_bad_regions_raise(args: tuple) -> None:
    with pytest.raises(RegionError, match="Region"):
        Region(*args)


def test_validation_errors_are_simulator_errors(tmp_path) -> None:
    chip = Chip(0, "ideal")
    region = Region(0, 0, 4, 0, 3)
    with pytest.raises(RegionError, match="chip 1"):
        chip.mvm(Region(1, 0, 4, 0, 3), np.zeros((1, 4)))
    with pytest.raises(ShapeError, match=r"\(batch, 4\)"):
        chip.mvm(region, np.zeros((2, 5)))
    with pytest.raises(ShapeError, match="dtype"):
        chip.mvm(region, np.zeros((2, 4), dtype=np.int32))
    with pytest.raises(InputRangeError, match=r"\[-1, 1\]"):
        chip.mvm(region, np.full((2, 4), 1.5))
    with pytest.raises(InputRangeError):
        chip.mvm(region, np.full((2, 4), np.nan))
    with pytest.raises(ShapeError, match="integer"):
        chip.apply_pulses(region, np.zeros((4, 3, 4)))
    with pytest.raises(InputRangeError, match="negative"):
        chip.apply_pulses(region, -np.ones((4, 3, 4), dtype=int))
    with pytest.raises(ShapeError, match="reset_mask"):
        chip.apply_pulses(region, np.zeros((4, 3, 4), int), np.zeros((4, 3, 4), int))
    with pytest.raises(InputRangeError, match="mapping scale"):
        chip.program(region, np.full((4, 3), 1e3))
    with pytest.raises(InputRangeError):
        chip.advance(-1.0)
    with pytest.raises(ChipStateError):
        Chip.load(tmp_path / "missing.npz")
    assert issubclass(ChipStateError, SimulatorError)
    with pytest.raises(InputRangeError, match="seed"):
        Chip(0, "ideal", seed=-1)
    with pytest.raises(SimulatorError, match="DeviceParams"):
        Chip(0, {"g_max_us": 3})
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ChipStateError, match="not a readable"):
        Chip.load(bad)


def test_replaying_writes_at_recorded_times_reproduces_state(rng: np.random.Generator) -> None:
    """The server's crash recovery: re-apply only the writes, each at its recorded time."""
    region = Region(0, 8, 40, 16, 48)
    live = Chip(0, "hermes", seed=9)
    journal = []
    for step in range(4):
        live.mvm(region, rng.uniform(-1, 1, (5, 32)))  # reads move the clock, not the state
        live.read_conductances(region)
        counts = rng.integers(0, 3, (32, 32, 4))
        reset = rng.random((32, 32, 4)) < 0.1
        target = rng.uniform(-3, 3, (32, 32)).astype(np.float32)
        for verb, args in (
            ("apply_pulses", (counts, reset)),
            ("program", (target, 0.4, 10)),
            ("reset", ()),
        ):
            if verb == "reset" and step % 2:
                continue
            journal.append((verb, live.time_s, args))
            getattr(live, verb)(region, *args)
        live.advance(100.0 * (step + 1))
    replay = Chip(0, "hermes", seed=9)
    for verb, t_s, args in journal:
        replay.advance_to(t_s)
        getattr(replay, verb)(region, *args)
    replay.advance_to(live.time_s)
    np.testing.assert_array_equal(replay.true_conductances(region), live.true_conductances(region))
    for name, arr in live._pop.arrays.items():
        np.testing.assert_array_equal(replay._pop.arrays[name], arr, err_msg=name)


def test_dac_and_adc_quantisation_and_saturation(rng: np.random.Generator) -> None:
    params = get_preset("hermes").replace(
        read_noise=False, drift=False, p_stuck_reset=0.0, p_stuck_gmax=0.0, p_dead=0.0
    )
    chip = Chip(0, params, seed=1, adc_full_scale_us=100.0)
    region = Region(0, 0, 256, 0, 8)
    chip.program(region, np.full(region.shape, 6.0, np.float32))
    g_net = net_conductance(chip.true_conductances(region))
    lsb = 100.0 / 127
    y = chip.mvm(region, np.ones((2, 256)))
    np.testing.assert_allclose(y, 100.0, rtol=1e-6)  # 256 x 6 µS saturates the ADC
    x = np.zeros((3, 256))
    x[:, 0] = [0.3, -0.5, 1.0]
    y = chip.mvm(region, x)
    x_q = np.rint(x * 127) / 127
    expected = np.clip(np.rint((x_q @ g_net) / lsb), -127, 127) * lsb
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert np.allclose(y / lsb, np.rint(y / lsb), atol=1e-3)


def test_mvm_scratch_buffers_never_leak_into_results(rng: np.random.Generator) -> None:
    """MVM temporaries live in per-chip scratch buffers: a returned output is its own
    array (a later MVM of another batch size does not change it), and the results equal
    a second chip's that ran the same requests in another order of batch sizes' growth."""
    region = Region(0, 0, 40, 0, 30)
    chips = [Chip(0, "hermes", seed=3) for _ in range(2)]
    for chip in chips:
        chip.program(region, _targets(np.random.default_rng(1), region, 4.0))
    big = rng.uniform(-1, 1, (500, 40)).astype(np.float32)
    small = rng.uniform(-1, 1, (7, 40)).astype(np.float32)
    y_small = chips[0].mvm(region, small)
    kept = y_small.copy()
    y_big = chips[0].mvm(region, big)
    np.testing.assert_array_equal(y_small, kept)  # not overwritten by the next call
    assert not np.shares_memory(y_small, y_big)
    chips[1]._scratch("xq", (600, 40)).fill(np.nan)  # stale, larger scratch on the twin
    chips[1]._scratch("s", (600, 30)).fill(np.nan)
    np.testing.assert_array_equal(chips[1].mvm(region, small), y_small)
    np.testing.assert_array_equal(chips[1].mvm(region, big), y_big)
    np.testing.assert_array_equal(
        chips[1].mvm_t(region, big[:, :30]), chips[0].mvm_t(region, big[:, :30])
    )


def test_mvm_inputs_checked_skips_only_the_range_scan() -> None:
    """``inputs_checked=True`` (the driver has checked x) still refuses a wrong shape or a
    non-float array, and gives the same result as the checked call on a twin chip."""
    region = Region(0, 0, 4, 0, 3)
    a, b = Chip(0, "hermes", seed=2), Chip(0, "hermes", seed=2)
    x = np.full((2, 4), 0.5, dtype=np.float32)
    np.testing.assert_array_equal(a.mvm(region, x), b.mvm(region, x, inputs_checked=True))
    with pytest.raises(ShapeError, match=r"\(batch, 4\)"):
        b.mvm(region, np.zeros((2, 5), np.float32), inputs_checked=True)
    with pytest.raises(ShapeError, match="float"):
        b.mvm(region, np.zeros((2, 4), np.int32), inputs_checked=True)
    with pytest.raises(ShapeError, match=r"\(batch, 3\)"):
        b.mvm_t(region, np.zeros((2, 4), np.float32), inputs_checked=True)
