"""How the host driver cuts a region into frame-sized rectangles (pure functions).

A board command addresses one rectangle of one chip; a request over a larger region is a
sequence of commands over the rectangles :func:`tiles` yields (bounded by the payload), and
for pulses each rectangle is halved by :func:`split_by_pulses` while it would carry more
pulses than the board accepts in one command.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from drivers.board.errors import SetupError


def tiles(rows: int, cols: int, max_cells: int) -> Iterator[tuple[int, int, int, int]]:
    """Cover a ``rows x cols`` rectangle with sub-rectangles of at most ``max_cells`` cells,
    in row-major order; yields relative ``(r0, r1, c0, c1)``."""
    if max_cells < 1:
        raise SetupError("link.max_payload_bytes is too small to carry a single cell")
    w = min(cols, max_cells)
    h = max(1, min(rows, max_cells // w))
    for r0 in range(0, rows, h):
        for c0 in range(0, cols, w):
            yield r0, min(r0 + h, rows), c0, min(c0 + w, cols)


def split_by_pulses(
    tile: tuple[int, int, int, int], counts: np.ndarray, max_pulses: int
) -> Iterator[tuple[int, int, int, int]]:
    """Halve ``tile`` (rows first) until each part holds at most ``max_pulses`` pulses."""
    r0, r1, c0, c1 = tile
    if int(counts[r0:r1, c0:c1].sum()) <= max_pulses or (r1 - r0 == 1 and c1 - c0 == 1):
        yield tile
    elif r1 - r0 > 1:
        mid = (r0 + r1) // 2
        yield from split_by_pulses((r0, mid, c0, c1), counts, max_pulses)
        yield from split_by_pulses((mid, r1, c0, c1), counts, max_pulses)
    else:
        mid = (c0 + c1) // 2
        yield from split_by_pulses((r0, r1, c0, mid), counts, max_pulses)
        yield from split_by_pulses((r0, r1, mid, c1), counts, max_pulses)
