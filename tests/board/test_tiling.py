"""How the driver splits a request into frames: exact cover, size and pulse bounds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.board.tiling import (
    PULSE_HEAD_BYTES,
    SPARSE_HEAD_BYTES,
    plan_pulses,
    split_by_pulses,
    tiles,
)


@given(st.integers(1, 256), st.integers(1, 256), st.integers(16, 5000))
@settings(max_examples=60, deadline=None)
def test_tiles_cover_the_region_exactly_once(rows: int, cols: int, max_cells: int) -> None:
    seen = np.zeros((rows, cols), np.int32)
    for r0, r1, c0, c1 in tiles(rows, cols, max_cells):
        assert (r1 - r0) * (c1 - c0) <= max_cells
        seen[r0:r1, c0:c1] += 1
    assert (seen == 1).all()


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1020, 20000), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_split_respects_the_pulses_per_command(rows: int, cols: int, limit: int, seed: int) -> None:
    counts = np.random.default_rng(seed).integers(0, 256, (rows, cols, 4))
    seen = np.zeros((rows, cols), np.int32)
    for r0, r1, c0, c1 in split_by_pulses((0, rows, 0, cols), counts, limit):
        assert int(counts[r0:r1, c0:c1].sum()) <= limit
        seen[r0:r1, c0:c1] += 1
    assert (seen == 1).all()


@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.floats(0.0, 1.0),
    st.floats(0.0, 0.3),
    st.sampled_from([64, 200, 2000]),
    st.integers(0, 2**31),
)
@settings(max_examples=80, deadline=None)
def test_pulse_plan_sends_every_device_once_within_limits(
    rows: int, cols: int, density: float, reset_density: float, payload: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    counts = np.where(
        rng.random((rows, cols, 4)) < density, rng.integers(1, 256, (rows, cols, 4)), 0
    )
    counts = counts.astype(np.uint8)
    reset = rng.random((rows, cols, 4)) < reset_density
    covered = np.zeros((rows, cols), np.int32)
    for kind, r0, r1, c0, c1 in plan_pulses(counts, reset, payload, 4 * 255):
        n_set = np.count_nonzero(counts[r0:r1, c0:c1])
        n_reset = np.count_nonzero(reset[r0:r1, c0:c1])
        if kind == "sparse":
            assert (c0, c1) == (0, cols)
            assert SPARSE_HEAD_BYTES + 5 * n_set + 4 * n_reset <= payload
        else:
            assert PULSE_HEAD_BYTES + 4.5 * (r1 - r0) * (c1 - c0) <= payload
        assert int(counts[r0:r1, c0:c1].sum()) <= 4 * 255
        assert n_set + n_reset > 0, "empty command planned"
        covered[r0:r1, c0:c1] += 1
    busy = counts.any(axis=2) | reset.any(axis=2)
    assert (covered[busy] == 1).all() and (covered <= 1).all()
