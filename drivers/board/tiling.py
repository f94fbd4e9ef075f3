"""How the host driver cuts a region into frame-sized rectangles (pure functions).

A board command addresses one rectangle of one chip; a request over a larger region is a
sequence of commands over the rectangles :func:`tiles` yields (bounded by the payload), and
for pulses each rectangle is halved by :func:`split_by_pulses` while it would carry more
pulses than the board accepts in one command.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from drivers.board import protocol as P
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


DENSE_BYTES_PER_DEVICE = 1.125
"""PULSE: one u8 count plus one reset bit per device."""
SPARSE_SET_BYTES, SPARSE_RESET_BYTES = 5, 4
"""PULSE_SPARSE: u32 index + u8 count per pulsed device; u32 index per RESET device."""
PULSE_HEAD_BYTES = P.PULSE.request.struct_.size
SPARSE_HEAD_BYTES = P.PULSE_SPARSE.request.struct_.size


def plan_pulses(
    counts: np.ndarray, reset: np.ndarray, max_payload: int, max_pulses: int
) -> Iterator[tuple[str, int, int, int, int]]:
    """Commands for one pulse pass over a ``(rows, cols, 4)`` region: ``(kind, r0, r1, c0,
    c1)`` with kind ``"dense"`` (PULSE) or ``"sparse"`` (PULSE_SPARSE), skipping empty parts.

    Sparse when listing the pulsed and RESET devices takes fewer bytes than the dense map:
    rows are grouped greedily into full-width bands that fit one payload (and the pulse
    limit); a row too busy for one sparse frame goes dense. Otherwise dense tiles as in
    :func:`tiles`, halved by :func:`split_by_pulses`.
    """
    rows, cols = counts.shape[:2]
    per_row_set = np.count_nonzero(counts.reshape(rows, -1), axis=1)
    per_row_reset = np.count_nonzero(reset.reshape(rows, -1), axis=1)
    per_row_pulses = counts.reshape(rows, -1).sum(axis=1, dtype=np.int64)
    row_cost = SPARSE_SET_BYTES * per_row_set + SPARSE_RESET_BYTES * per_row_reset
    dense_cells = int((max_payload - PULSE_HEAD_BYTES) // (4 * DENSE_BYTES_PER_DEVICE))
    room = max_payload - SPARSE_HEAD_BYTES

    def dense(r0: int, r1: int) -> Iterator[tuple[str, int, int, int, int]]:
        for t0, t1, c0, c1 in tiles(r1 - r0, cols, dense_cells):
            for a0, a1, b0, b1 in split_by_pulses((r0 + t0, r0 + t1, c0, c1), counts, max_pulses):
                if counts[a0:a1, b0:b1].any() or reset[a0:a1, b0:b1].any():
                    yield "dense", a0, a1, b0, b1

    if int(row_cost.sum()) >= DENSE_BYTES_PER_DEVICE * counts.size:
        yield from dense(0, rows)
        return
    r = 0
    while r < rows:
        if row_cost[r] > room or per_row_pulses[r] > max_pulses:
            yield from dense(r, r + 1)
            r += 1
            continue
        end, cost, pulses = r, 0, 0
        while (
            end < rows
            and cost + row_cost[end] <= room
            and pulses + per_row_pulses[end] <= max_pulses
        ):
            cost += int(row_cost[end])
            pulses += int(per_row_pulses[end])
            end += 1
        if cost:
            yield "sparse", r, end, 0, cols
        r = end
