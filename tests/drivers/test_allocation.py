"""``drivers.allocation.allocate``: first fit around taken regions and bad lines,
fewest bad cells; checked against a brute-force search on small arrays."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.allocation import Defects, allocate
from protocols.region import Region


def brute(shape, rows, cols, taken, bad_rows, bad_cols, bad_cells):
    """Every admissible corner with its bad-cell count, in row-major order."""
    m, n = shape
    out = []
    for r in range(rows - m + 1):
        for c in range(cols - n + 1):
            reg = Region(0, r, r + m, c, c + n)
            if any(reg.overlaps(t) for t in taken if t.chip == 0):
                continue
            if any(r <= b < r + m for b in bad_rows) or any(c <= b < c + n for b in bad_cols):
                continue
            out.append((sum(r <= y < r + m and c <= x < c + n for y, x in bad_cells), r, c))
    return out


@st.composite
def problems(draw):
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    shape = (draw(st.integers(1, rows + 1)), draw(st.integers(1, cols + 1)))
    taken = []
    for _ in range(draw(st.integers(0, 3))):
        r0, c0 = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
        r1, c1 = draw(st.integers(r0 + 1, rows)), draw(st.integers(c0 + 1, cols))
        taken.append(Region(draw(st.sampled_from([0, 0, 1])), r0, r1, c0, c1))
    bad_rows = draw(st.sets(st.integers(0, rows - 1), max_size=3))
    bad_cols = draw(st.sets(st.integers(0, cols - 1), max_size=3))
    cell = st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1))
    bad_cells = draw(st.sets(cell, max_size=8))
    return shape, rows, cols, taken, bad_rows, bad_cols, bad_cells


@settings(max_examples=300, deadline=None)
@given(problems())
def test_allocate_is_the_first_admissible_corner_with_fewest_bad_cells(p) -> None:
    shape, rows, cols, taken, bad_rows, bad_cols, bad_cells = p
    got = allocate(
        shape, rows, cols, taken=taken, bad_rows=bad_rows, bad_cols=bad_cols, bad_cells=bad_cells
    )
    options = brute(shape, rows, cols, taken, bad_rows, bad_cols, bad_cells)
    if not options:
        assert got is None
        return
    best = min(options)  # fewest bad cells, then row-major order
    assert got == Region(0, best[1], best[1] + shape[0], best[2], best[2] + shape[1])
    assert got.shape == shape and got.row1 <= rows and got.col1 <= cols
    assert not any(got.overlaps(t) for t in taken if t.chip == 0)
    assert not any(got.row0 <= b < got.row1 for b in bad_rows)
    assert not any(got.col0 <= b < got.col1 for b in bad_cols)


@settings(max_examples=200, deadline=None)
@given(problems())
def test_without_bad_cells_it_is_plain_first_fit(p) -> None:
    shape, rows, cols, taken, bad_rows, bad_cols, _ = p
    got = allocate(shape, rows, cols, taken=taken, bad_rows=bad_rows, bad_cols=bad_cols)
    options = brute(shape, rows, cols, taken, bad_rows, bad_cols, ())
    want = None if not options else options[0]
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert (got.row0, got.col0) == want[1:]


def test_a_chip_without_defects_fills_from_the_top_left() -> None:
    assert allocate((150, 88), 256, 256) == Region(0, 0, 150, 0, 88)
    a = Region(0, 0, 150, 0, 88)
    assert allocate((88, 150), 256, 256, taken=[a]) == Region(0, 0, 88, 88, 238)
    assert allocate((88, 150), 256, 256, chip=1, taken=[a]) == Region(1, 0, 88, 0, 150)


def test_bad_lines_push_the_region_past_them() -> None:
    # row 3 and column 5 broken: a 4x4 region starts below row 3 and right of column 5
    # only if it must; here rows 4.. and cols 0..4 fit
    assert allocate((4, 4), 16, 16, bad_rows=[3], bad_cols=[5]) == Region(0, 4, 8, 0, 4)
    assert allocate((4, 8), 16, 16, bad_rows=[3], bad_cols=[5]) == Region(0, 4, 8, 6, 14)
    assert allocate((16, 16), 16, 16, bad_rows=[0]) is None
    assert allocate((17, 1), 16, 16) is None


def test_a_clean_window_is_preferred_to_an_earlier_one_with_bad_cells() -> None:
    assert allocate((2, 2), 4, 4, bad_cells=[(0, 0)]) == Region(0, 0, 2, 1, 3)
    everywhere = [(r, c) for r in range(4) for c in range(4) if (r + c) % 2 == 0]
    got = allocate((2, 2), 4, 4, bad_cells=everywhere)
    assert got == Region(0, 0, 2, 0, 2)  # every window holds 2: the first one
    d = Defects(cells=frozenset(everywhere))
    assert d.cells_in(got) == [(0, 0), (1, 1)]


def test_a_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1x1"):
        allocate((0, 3), 8, 8)


def test_defects_from_a_kept_report() -> None:
    from drivers.allocation import defects_from_report

    report = {
        "kind": "pcm-hil-health",
        "chips": [
            {"chip": 1, "bad_rows": [3], "bad_cols": [], "bad_cells": [[3, 0], [9, 9]]},
            {"chip": 1, "bad_rows": [], "bad_cols": [7], "bad_cells": [[9, 9]]},
            {"chip": 0, "bad_rows": [], "bad_cells": []},  # a version-1 report: no bad_cols
        ],
    }
    d = defects_from_report(report)
    assert list(d) == [0, 1] and not d[0]
    assert d[1] == Defects(frozenset({3}), frozenset({7}), frozenset({(3, 0), (9, 9)}))
    with pytest.raises(ValueError, match=r"chips\[0\]: KeyError 'bad_rows'"):
        defects_from_report({"chips": [{"chip": 0}]})
