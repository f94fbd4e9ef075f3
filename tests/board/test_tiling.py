"""How the driver splits a request into frames: exact cover, size and pulse bounds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.board.tiling import split_by_pulses, tiles


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
