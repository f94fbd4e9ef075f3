"""Where a matrix goes on a chip: first fit around taken regions and bad lines.

One pure function, :func:`allocate`, shared by the trainer's placement
(:mod:`hil.trainer.placement`) and any server-side allocator (run reservations): no I/O,
no state, numpy only.

- Candidates are the top-left corners ``(row0, col0)`` of a ``rows x cols`` window that
  overlaps no ``taken`` region of the chip and holds no bad row and no bad column (a
  broken word or bit line: every cell on it is unusable, so no region may contain it).
- Without ``bad_cells`` the first candidate in row-major order wins (first fit).
- With ``bad_cells`` (isolated stuck/dead cells, which at real fault rates no large region
  can avoid entirely) the candidate holding the fewest bad cells wins, ties broken by
  row-major order; so a clean window is taken whenever one exists.
- ``None`` when no candidate exists (the caller decides what to say).

Everything is computed on the whole array at once (prefix sums), ``O(rows x cols)``.
:func:`defects_from_report` turns a kept ``hil health`` report into the per-chip
:class:`Defects` to pass in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.region import Region


@dataclass(frozen=True)
class Defects:
    """Bad rows, columns and cells of one chip (absolute array coordinates)."""

    rows: frozenset[int] = field(default_factory=frozenset)
    cols: frozenset[int] = field(default_factory=frozenset)
    cells: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.rows or self.cols or self.cells)

    def cells_in(self, region: Region) -> list[tuple[int, int]]:
        """The bad cells inside ``region``, sorted."""
        return sorted(
            (r, c)
            for r, c in self.cells
            if region.row0 <= r < region.row1 and region.col0 <= c < region.col1
        )


def defects_from_report(report: Mapping[str, Any]) -> dict[int, Defects]:
    """Per chip, the bad rows, columns and cells of a ``hil health`` report (the JSON
    object ``Driver.health_report()`` returns; a server allocator reads the one it keeps).
    Raises ``ValueError`` naming the field when the report is not of that shape."""
    out: dict[int, tuple[set[int], set[int], set[tuple[int, int]]]] = {}
    where = "chips"
    try:
        for i, h in enumerate(report["chips"]):
            where = f"chips[{i}]"
            rows, cols, cells = out.setdefault(int(h["chip"]), (set(), set(), set()))
            rows.update(int(r) for r in h["bad_rows"])
            cols.update(int(c) for c in h.get("bad_cols", ()))
            cells.update((int(r), int(c)) for r, c in h["bad_cells"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"health report {where}: {type(exc).__name__} {exc}") from None
    return {
        chip: Defects(frozenset(r), frozenset(c), frozenset(x))
        for chip, (r, c, x) in sorted(out.items())
    }


def _line_ok(bad: Iterable[int], size: int, width: int) -> np.ndarray:
    """``ok[i]``: the window ``[i, i + width)`` of ``size`` lines holds no bad line."""
    mask = np.zeros(size, dtype=np.int64)
    idx = [int(i) for i in bad if 0 <= int(i) < size]
    mask[idx] = 1
    cs = np.concatenate([[0], np.cumsum(mask)])
    return (cs[width:] - cs[: size - width + 1]) == 0


def candidates(
    shape: tuple[int, int],
    rows: int,
    cols: int,
    *,
    chip: int = 0,
    taken: Iterable[Region] = (),
    bad_rows: Iterable[int] = (),
    bad_cols: Iterable[int] = (),
) -> np.ndarray:
    """Bool ``(rows - m + 1, cols - n + 1)``: top-left corners :func:`allocate` may use."""
    m, n = _check(shape, rows, cols)
    if m > rows or n > cols:
        return np.zeros((0, 0), dtype=bool)
    ok = np.outer(_line_ok(bad_rows, rows, m), _line_ok(bad_cols, cols, n))
    for t in taken:
        if t.chip != chip:
            continue
        ok[max(0, t.row0 - m + 1) : t.row1, max(0, t.col0 - n + 1) : t.col1] = False
    return ok


def bad_cell_counts(
    shape: tuple[int, int], rows: int, cols: int, bad_cells: Iterable[tuple[int, int]]
) -> np.ndarray:
    """``counts[r, c]``: bad cells in the ``shape`` window with top-left corner ``(r, c)``."""
    m, n = _check(shape, rows, cols)
    grid = np.zeros((rows, cols), dtype=np.int64)
    for r, c in bad_cells:
        if 0 <= r < rows and 0 <= c < cols:
            grid[r, c] = 1
    s = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    s[1:, 1:] = grid.cumsum(0).cumsum(1)
    return (
        s[m:, n:]
        - s[: rows - m + 1, n:]
        - s[m:, : cols - n + 1]
        + s[: rows - m + 1, : cols - n + 1]
    )


def allocate(
    shape: tuple[int, int],
    rows: int,
    cols: int,
    *,
    chip: int = 0,
    taken: Iterable[Region] = (),
    bad_rows: Iterable[int] = (),
    bad_cols: Iterable[int] = (),
    bad_cells: Iterable[tuple[int, int]] = (),
) -> Region | None:
    """A ``shape = (m, n)`` region of chip ``chip`` (``rows x cols`` array), see the
    module doc; ``None`` when none is free of taken regions and bad lines."""
    m, n = _check(shape, rows, cols)
    ok = candidates(
        (m, n), rows, cols, chip=chip, taken=taken, bad_rows=bad_rows, bad_cols=bad_cols
    )
    if not ok.any():
        return None
    cells = list(bad_cells)
    if cells:
        counts = np.where(ok, bad_cell_counts((m, n), rows, cols, cells), np.iinfo(np.int64).max)
        flat = int(np.argmin(counts))  # first minimum in row-major order
    else:
        flat = int(np.argmax(ok))  # first True in row-major order
    r, c = divmod(flat, ok.shape[1])
    return Region(chip, r, r + m, c, c + n)


def _check(shape: tuple[int, int], rows: int, cols: int) -> tuple[int, int]:
    m, n = (int(x) for x in shape)
    if m < 1 or n < 1:
        raise ValueError(f"shape {tuple(shape)} must be at least 1x1")
    if rows < 1 or cols < 1:
        raise ValueError(f"array {rows}x{cols} must be at least 1x1")
    return m, n


__all__ = ["Defects", "allocate", "bad_cell_counts", "candidates", "defects_from_report"]
