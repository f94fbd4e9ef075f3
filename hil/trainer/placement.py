"""Placement of a network's matrices onto chip regions.

On a device, a run's regions are reserved through the driver contract
(:func:`wants`, ``Driver.reserve``): the device side (the server, for a shared chip)
allocates each matrix where there is room (:func:`drivers.allocation.allocate`), the
paper's chip first, on the run's chip if ``device.chip`` is set, or exactly at the
shelf-packed block anchored at ``device.region`` (``[CHIP, ROW, COL]``). :func:`place` is the
layout of the paper's run on an empty device; the chip backend asks for exactly its regions
when the run's health report comes from a file the device side does not keep:

As in the paper's hardware run, forward matrices (``h{l}.W``, ``h{l}.H``, ``out.W``) go to
chip 0 ("chip 1") and the fixed feedback matrices ``B{l}`` to chip 1 ("chip 2"). On each
chip the matrices, tallest first, go where :func:`drivers.allocation.allocate` puts them:
first fit around the matrices already placed, never on a row or column that the latest
health report (``hil health``) marks bad, and, among those places, where the fewest bad
cells are. Regions never overlap. If the bad cells' preference leaves a matrix no room,
the chip is placed again by plain first fit (bad lines still avoided). A network that does
not fit raises :class:`PlacementError` naming the matrix, its shape and the space left.
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.allocation import Defects, allocate
from hil.errors import ConfigError
from protocols.messages import MatrixWant
from protocols.region import Region


class PlacementError(ConfigError):
    """A network's matrices do not fit the device's chips."""


def chip_of(name: str) -> int:
    """Chip index of a matrix: feedback ``B*`` on chip 1, everything else on chip 0."""
    return 1 if name.startswith("B") else 0


def _place_chip(
    shapes: Mapping[str, tuple[int, int]],
    names: list[str],
    chip: int,
    rows: int,
    cols: int,
    bad: Defects,
    use_cells: bool,
) -> tuple[dict[str, Region], str | None]:
    out: dict[str, Region] = {}
    for name in sorted(names, key=lambda k: -shapes[k][0]):
        region = allocate(
            shapes[name],
            rows,
            cols,
            chip=chip,
            taken=out.values(),
            bad_rows=bad.rows,
            bad_cols=bad.cols,
            bad_cells=bad.cells if use_cells else (),
        )
        if region is None:
            return out, name
        out[name] = region
    return out, None


def place(
    shapes: Mapping[str, tuple[int, int]],
    chips: int,
    rows: int,
    cols: int,
    defects: Mapping[int, Defects] | None = None,
) -> dict[str, Region]:
    """Regions for ``shapes`` (name -> (m, n): m rows driven by inputs, n columns read),
    avoiding the bad rows and columns of ``defects`` (chip -> :class:`Defects`)."""
    out: dict[str, Region] = {}
    by_chip: dict[int, list[str]] = {}
    for name in shapes:
        by_chip.setdefault(chip_of(name), []).append(name)
    for chip, names in sorted(by_chip.items()):
        if chip >= chips:
            raise PlacementError(
                f"matrices {names} belong on chip {chip}, but the device has only {chips} chip(s)"
            )
        for name in names:
            m, n = shapes[name]
            if m > rows or n > cols:
                raise PlacementError(
                    f"matrix {name} of shape {m}x{n} is larger than a {rows}x{cols} array "
                    f"(chip {chip}); reduce the layer width"
                )
        bad = (defects or {}).get(chip, Defects())
        placed, failed = _place_chip(shapes, names, chip, rows, cols, bad, use_cells=True)
        if failed is not None and bad.cells:
            placed, failed = _place_chip(shapes, names, chip, rows, cols, bad, use_cells=False)
        if failed is not None:
            m, n = shapes[failed]
            used = ", ".join(f"{k} {r}" for k, r in placed.items())
            lines = (
                f"; avoiding {len(bad.rows)} bad rows and {len(bad.cols)} bad columns "
                f"of the health report"
                if bad.rows or bad.cols
                else ""
            )
            raise PlacementError(
                f"matrix {failed} of shape {m}x{n} does not fit on chip {chip} "
                f"({rows}x{cols}; already placed: {used or 'nothing'}{lines}); "
                f"reduce the layer widths"
            )
        out.update(placed)
    return out


def anchored(
    shapes: Mapping[str, tuple[int, int]], chip: int, row: int, col: int, rows: int, cols: int
) -> dict[str, Region]:
    """The matrices shelf-packed (tallest first) from corner ``(row, col)`` of ``chip``."""
    out: dict[str, Region] = {}
    shelf_row, shelf_height, c = row, 0, col
    for name in sorted(shapes, key=lambda k: (-shapes[k][0], k)):
        m, n = shapes[name]
        if c + n > cols and c > col:
            shelf_row, c, shelf_height = shelf_row + shelf_height, col, 0
        if shelf_row + m > rows or c + n > cols:
            raise PlacementError(
                f"matrix {name} of shape {m}x{n} does not fit on chip {chip} from "
                f"device.region [{chip}, {row}, {col}] ({rows}x{cols} array); move the corner "
                f"or reduce the layer widths"
            )
        out[name] = Region(chip, shelf_row, shelf_row + m, c, c + n)
        c += n
        shelf_height = max(shelf_height, m)
    return out


def wants(
    shapes: Mapping[str, tuple[int, int]],
    *,
    chips: int,
    rows: int,
    cols: int,
    chip: int | None = None,
    region: tuple[int, int, int] | None = None,
    fixed: Mapping[str, Region] | None = None,
) -> list[MatrixWant]:
    """What a run asks the device side to reserve: one :class:`MatrixWant` per matrix.

    ``fixed`` (a resumed run's recorded regions) and ``region`` (an anchor) ask for exact
    regions; ``chip`` for a chip; otherwise anywhere, the paper's chip first (forward
    matrices on chip 0, feedback ``B*`` on chip 1: on an empty device, :func:`place`). Refuses a network that cannot fit
    an empty device before anything is asked."""
    for name, (m, n) in shapes.items():
        if m > rows or n > cols:
            raise PlacementError(
                f"matrix {name} of shape {m}x{n} is larger than a {rows}x{cols} array; "
                f"reduce the layer width"
            )
    if chip is not None and chip >= chips:
        raise PlacementError(f"device.chip={chip}, but the device has only {chips} chip(s)")
    exact: dict[str, Region] = dict(fixed or {})
    if region is not None and not exact:
        c, r, col = region
        if c >= chips:
            raise PlacementError(
                f"device.region={list(region)}: chip {c}, but the device has only {chips} chip(s)"
            )
        exact = anchored(shapes, c, r, col, rows, cols)
    elif not exact:
        if (
            sum(m * n for m, n in shapes.values())
            > (1 if chip is not None else chips) * rows * cols
        ):
            raise PlacementError(
                f"the matrices ({sum(m * n for m, n in shapes.values())} cells) do not fit "
                f"{'chip ' + str(chip) if chip is not None else f'{chips} chip(s)'} of "
                f"{rows}x{cols} cells; reduce the layer widths"
            )
    return [
        MatrixWant(
            name=name,
            rows=m,
            cols=n,
            chip=chip,
            prefer=None if chip is not None or chips < 2 else chip_of(name),
            region=exact.get(name),
        )
        for name, (m, n) in shapes.items()
    ]
