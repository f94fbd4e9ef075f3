"""A rectangular region of one 256x256 crossbar: chip index plus half-open row/col ranges.

The MVM input drives the region's rows ``row0 <= i < row1``; outputs come from its columns
``col0 <= j < col1`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from simulator.errors import RegionError

ARRAY_SIZE = 256
"""Rows and columns of one crossbar (HERMES core; Khaddam-Aljameh et al. 2022)."""

DEVICES_PER_CELL = 4
"""PCM devices per unit cell, in order ``A+, B+, A-, B-``."""


@dataclass(frozen=True)
class Region:
    """``Region(chip, row0, row1, col0, col1)``: rows ``[row0, row1)`` x cols ``[col0, col1)``."""

    chip: int
    row0: int
    row1: int
    col0: int
    col1: int

    def __post_init__(self) -> None:
        for name in ("chip", "row0", "row1", "col0", "col1"):
            value = getattr(self, name)
            try:
                if isinstance(value, bool):
                    raise TypeError
                object.__setattr__(self, name, operator.index(value))
            except TypeError:
                raise RegionError(
                    f"Region.{name} must be an int, got {value!r} ({type(value).__name__})"
                ) from None
        if self.chip < 0:
            raise RegionError(f"Region.chip must be >= 0, got {self.chip}")
        for lo, hi, axis in (("row0", "row1", "rows"), ("col0", "col1", "cols")):
            a, b = getattr(self, lo), getattr(self, hi)
            if not 0 <= a < b <= ARRAY_SIZE:
                raise RegionError(
                    f"Region {axis} [{lo}={a}, {hi}={b}) must satisfy "
                    f"0 <= {lo} < {hi} <= {ARRAY_SIZE} (half-open, non-empty)"
                )

    @classmethod
    def full(cls, chip: int = 0) -> Region:
        """The whole 256x256 array of ``chip``."""
        return cls(chip, 0, ARRAY_SIZE, 0, ARRAY_SIZE)

    @property
    def nrows(self) -> int:
        return self.row1 - self.row0

    @property
    def ncols(self) -> int:
        return self.col1 - self.col0

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the region."""
        return (self.nrows, self.ncols)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices into a ``(256, 256, ...)`` array."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    @property
    def key(self) -> tuple[int, int, int, int]:
        """The chip-independent extent ``(row0, row1, col0, col1)``."""
        return (self.row0, self.row1, self.col0, self.col1)

    def overlaps(self, other: Region) -> bool:
        """True when both regions are on the same chip and share at least one cell."""
        return (
            self.chip == other.chip
            and self.row0 < other.row1
            and other.row0 < self.row1
            and self.col0 < other.col1
            and other.col0 < self.col1
        )
