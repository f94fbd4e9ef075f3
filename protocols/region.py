"""A region of one crossbar: a chip index plus half-open row and column ranges.

``Region(chip, row0, row1, col0, col1)`` selects rows ``row0 <= r < row1`` and columns
``col0 <= c < col1`` of chip ``chip``. The MVM input drives the region's rows; outputs
come from its columns (see docs/ARCHITECTURE.md). The model only checks what it can
know alone (non-negative, non-empty); bounds against a device's array shape are checked
by the driver, which knows the shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Region(BaseModel):
    """Half-open rectangle ``[row0, row1) x [col0, col1)`` of chip ``chip``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chip: int = Field(ge=0, description="chip index (0 or 1 on the two-chip system)")
    row0: int = Field(ge=0, description="first row (inclusive)")
    row1: int = Field(ge=1, description="last row (exclusive)")
    col0: int = Field(ge=0, description="first column (inclusive)")
    col1: int = Field(ge=1, description="last column (exclusive)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Allow the positional form Region(chip, row0, row1, col0, col1).
        if args:
            names = ("chip", "row0", "row1", "col0", "col1")
            if len(args) > len(names):
                raise TypeError(f"Region takes at most 5 positional arguments, got {len(args)}")
            kwargs.update(zip(names, args, strict=False))
        super().__init__(**kwargs)

    @field_validator("chip", "row0", "row1", "col0", "col1", mode="before")
    @classmethod
    def _integer(cls, v: Any) -> Any:
        # strict everywhere (the wire's strict mode does not reach a model with its own
        # __init__): an int or numpy integer, never a bool, string or float
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            raise ValueError(f"must be an integer, got {type(v).__name__} {v!r}")
        return int(v)

    @model_validator(mode="after")
    def _non_empty(self) -> Region:
        if self.row1 <= self.row0:
            raise ValueError(
                f"empty row range [{self.row0}, {self.row1}): need row0 < row1 (half-open)"
            )
        if self.col1 <= self.col0:
            raise ValueError(
                f"empty column range [{self.col0}, {self.col1}): need col0 < col1 (half-open)"
            )
        return self

    @property
    def rows(self) -> int:
        """Number of rows in the region."""
        return self.row1 - self.row0

    @property
    def cols(self) -> int:
        """Number of columns in the region."""
        return self.col1 - self.col0

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the region."""
        return (self.rows, self.cols)

    def overlaps(self, other: Region) -> bool:
        """True when both regions are on the same chip and share at least one cell."""
        return (
            self.chip == other.chip
            and self.row0 < other.row1
            and other.row0 < self.row1
            and self.col0 < other.col1
            and other.col0 < self.col1
        )

    def contains(self, other: Region) -> bool:
        """True when ``other`` lies entirely inside this region."""
        return (
            self.chip == other.chip
            and self.row0 <= other.row0
            and other.row1 <= self.row1
            and self.col0 <= other.col0
            and other.col1 <= self.col1
        )

    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, col_slice)`` for indexing a ``(rows, cols, ...)`` array of the chip."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    def __str__(self) -> str:
        return f"chip{self.chip}[{self.row0}:{self.row1},{self.col0}:{self.col1}]"
