"""Placement of a network's matrices onto chip regions.

As in the paper's hardware run, forward matrices (``h{l}.W``, ``h{l}.H``, ``out.W``) go to
chip 0 ("chip 1") and the fixed feedback matrices ``B{l}`` to chip 1 ("chip 2"). On each chip
the matrices are packed by a shelf algorithm: left to right along a shelf of rows, a new
shelf below when the columns run out; regions never overlap. A network that does not fit
raises :class:`PlacementError` naming the matrix, its shape and the space left.
"""

from __future__ import annotations

from collections.abc import Mapping

from hil.errors import ConfigError
from protocols.region import Region


class PlacementError(ConfigError):
    """A network's matrices do not fit the device's chips."""


def chip_of(name: str) -> int:
    """Chip index of a matrix: feedback ``B*`` on chip 1, everything else on chip 0."""
    return 1 if name.startswith("B") else 0


def place(
    shapes: Mapping[str, tuple[int, int]], chips: int, rows: int, cols: int
) -> dict[str, Region]:
    """Regions for ``shapes`` (name -> (m, n): m rows driven by inputs, n columns read)."""
    out: dict[str, Region] = {}
    by_chip: dict[int, list[str]] = {}
    for name in shapes:
        by_chip.setdefault(chip_of(name), []).append(name)
    for chip, names in sorted(by_chip.items()):
        if chip >= chips:
            raise PlacementError(
                f"matrices {names} belong on chip {chip}, but the device has only {chips} chip(s)"
            )
        shelf_row, shelf_height, col = 0, 0, 0
        for name in sorted(names, key=lambda k: -shapes[k][0]):
            m, n = shapes[name]
            if m > rows or n > cols:
                raise PlacementError(
                    f"matrix {name} of shape {m}x{n} is larger than a {rows}x{cols} array "
                    f"(chip {chip}); reduce the layer width"
                )
            if col + n > cols:  # next shelf
                shelf_row, col, shelf_height = shelf_row + shelf_height, 0, 0
            if shelf_row + m > rows:
                used = ", ".join(f"{k} {out[k]}" for k in out if out[k].chip == chip)
                raise PlacementError(
                    f"matrix {name} of shape {m}x{n} does not fit on chip {chip} "
                    f"({rows}x{cols}; already placed: {used or 'nothing'}); "
                    f"reduce the layer widths"
                )
            out[name] = Region(chip, shelf_row, shelf_row + m, col, col + n)
            col += n
            shelf_height = max(shelf_height, m)
    return out
