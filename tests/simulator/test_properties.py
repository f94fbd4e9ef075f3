"""Hypothesis properties: conductance bounds, mapping round trip, drift monotonic."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hil.trainer.cells import CellMapping, arbitrate, net_conductance
from simulator import Chip, Region, physics

REGION = Region(0, 3, 11, 5, 12)


@settings(max_examples=25, deadline=None)
@given(
    preset=st.sampled_from(["hermes", "aihwkit-pcm", "ideal"]),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(
        st.tuples(st.integers(0, 40), st.floats(0.0, 0.5), st.floats(0.0, 1e7)),
        min_size=1,
        max_size=4,
    ),
)
def test_conductances_stay_within_device_range(preset: str, seed: int, steps: list) -> None:
    chip = Chip(0, preset, seed=seed)
    g_max = chip.device_g_max_us(REGION)
    rng = np.random.default_rng(seed)
    for max_count, p_reset, dt in steps:
        counts = rng.integers(0, max_count + 1, (*REGION.shape, 4))
        chip.apply_pulses(REGION, counts, rng.random((*REGION.shape, 4)) < p_reset)
        chip.advance(dt)
        g = chip.true_conductances(REGION)
        assert np.all(g >= 0.0) and np.all(g <= g_max)
    target = rng.uniform(-1, 1, REGION.shape).astype(np.float32) * chip.params.g_net_max_us
    chip.program(REGION, target)
    g = chip.true_conductances(REGION)
    # aihwkit-pcm lands like PCMLikeNoiseModel, clamped at 0 only: g_max + sigma_prog xi
    headroom = 0.0 if chip.params.prog_clip_gmax else 6 * physics.prog_sigma(g_max, chip.params)
    assert np.all(g >= 0.0) and np.all(g <= g_max + headroom)


@settings(max_examples=200, deadline=None)
@given(
    w=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(-2.0, 2.0)
    ),
    w_max=st.floats(0.5, 2.0),
    g_net_max=st.floats(1.0, 30.0),
    levels=st.one_of(st.none(), st.integers(1, 255)),
)
def test_mapping_round_trip_within_half_step(w, w_max, g_net_max, levels) -> None:
    m = CellMapping(w_max, g_net_max, levels)
    back = m.to_weight(m.to_conductance(w))
    clipped = np.clip(w, -w_max, w_max)
    tol = m.step / 2 + 1e-12 * max(1.0, w_max)
    assert np.all(np.abs(back - clipped) <= tol + 1e-9 * np.abs(clipped))
    assert np.all(np.abs(m.to_conductance(w)) <= g_net_max * (1 + 1e-12))


@settings(max_examples=100, deadline=None)
@given(
    age=hnp.arrays(np.float64, 16, elements=st.floats(0.0, 1e9)),
    extra=hnp.arrays(np.float64, 16, elements=st.floats(0.0, 1e9)),
    nu=hnp.arrays(np.float32, 16, elements=st.floats(0.0, 0.5, width=32)),
)
def test_drift_never_raises_conductance(age, extra, nu) -> None:
    f1 = physics.drift_factor(age, nu, 20.0)
    f2 = physics.drift_factor(age + extra, nu, 20.0)
    assert np.all(f1 <= 1.0) and np.all(f2 <= f1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), dts=st.lists(st.floats(0.0, 1e6), min_size=2, max_size=5))
def test_chip_conductances_only_fall_between_writes(seed: int, dts: list) -> None:
    chip = Chip(0, "hermes", seed=seed)
    chip.apply_pulses(REGION, np.full((*REGION.shape, 4), 3))
    prev = chip.true_conductances(REGION)
    for dt in dts:
        chip.advance(dt)
        now = chip.true_conductances(REGION)
        assert np.all(now <= prev)
        prev = now


@given(
    n=hnp.arrays(
        np.int64, st.tuples(st.integers(1, 5), st.integers(1, 5)), elements=st.integers(-20, 20)
    ),
    counter=st.integers(0, 10**6),
)
def test_arbitration_conserves_signed_counts(n, counter) -> None:
    counts, new = arbitrate(n, counter)
    assert new == counter + 1
    assert np.array_equal(2 * net_conductance(counts), n)
    assert np.count_nonzero(counts.sum(axis=(0, 1))) <= 2
    assert counts[..., 1 - counter % 2].sum() == 0 and counts[..., 3 - counter % 2].sum() == 0
