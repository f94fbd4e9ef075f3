"""A quick health scan of chips through the driver contract (``hil health``).

Per chip and region: RESET every device, ``reads`` reads, ``pulses`` SET pulses to every
device, ``reads`` reads, RESET again (the region is left RESET: run it on chips that hold
nothing to keep, e.g. before a training run places its matrices). Devices are classified
by :func:`hil.characterize.faults.classify` (stuck at RESET, stuck at g_max, dead). A cell
is bad when any of its four devices is; a row is bad when more than ``row_fraction`` of
its cells are (a broken word line).

The report (:class:`HealthReport`, JSON) lists the bad cells and rows per chip, the fault
fractions and, when the driver keeps a wear ledger, its SET/RESET totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from drivers.base import Driver
from hil.characterize import faults as F
from protocols.region import Region


class ChipHealth(BaseModel):
    """Health of one scanned region of one chip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chip: int
    region: Region
    devices: int
    fractions: dict[str, float]
    bad_cells: list[tuple[int, int]] = Field(description="(row, col) of cells with a bad device")
    bad_rows: list[int] = Field(description="rows with more than row_fraction bad cells")


class HealthReport(BaseModel):
    """What ``hil health`` writes (``--json``) and the trainer's placement reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "pcm-hil-health"
    version: int = 1
    created: str
    device: str
    driver: str
    preset: str
    row_fraction: float
    chips: list[ChipHealth]
    wear: dict[str, Any] | None = None
    duration_s: float

    def bad_cells(self, chip: int) -> set[tuple[int, int]]:
        return {tuple(c) for h in self.chips if h.chip == chip for c in h.bad_cells}  # type: ignore[misc]

    def bad_rows(self, chip: int) -> set[int]:
        return {r for h in self.chips if h.chip == chip for r in h.bad_rows}


def scan_region(
    drv: Driver, region: Region, reads: int, pulses: int, row_fraction: float
) -> ChipHealth:
    """The scan of the module doc on one region."""
    n_dev = drv.info().devices_per_cell
    drv.reset(region)
    r0 = np.mean([drv.read_conductances(region) for _ in range(reads)], axis=0)
    drv.apply_pulses(region, np.full((*region.shape, n_dev), pulses, np.int32))
    rk = np.mean([drv.read_conductances(region) for _ in range(reads)], axis=0)
    drv.reset(region)
    codes = F.classify(r0.ravel(), np.stack([r0.ravel(), rk.ravel()])).reshape(r0.shape)
    bad = (codes != F.OK).any(-1)
    rows = np.flatnonzero(bad.mean(1) > row_fraction)
    cells = np.argwhere(bad)
    return ChipHealth(
        chip=region.chip,
        region=region,
        devices=int(codes.size),
        fractions=F.fractions(codes),
        bad_cells=[(int(r) + region.row0, int(c) + region.col0) for r, c in cells],
        bad_rows=[int(r) + region.row0 for r in rows],
    )


def scan(
    drv: Driver,
    url: str,
    regions: list[Region],
    *,
    reads: int = 2,
    pulses: int = 8,
    row_fraction: float = 0.25,
    wear: Callable[[Region], dict[str, Any]] | None = None,
    tick: Callable[[int], None] | None = None,
) -> HealthReport:
    """Scan every region; ``wear(region)`` adds the ledger's totals when available."""
    t = time.perf_counter()
    info = drv.info()
    chips = []
    for i, region in enumerate(regions):
        n = min(pulses, info.limits.max_pulses_per_device)
        chips.append(scan_region(drv, region, reads, n, row_fraction))
        if tick:
            tick(i + 1)
    return HealthReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        device=url,
        driver=info.driver,
        preset=info.preset,
        row_fraction=row_fraction,
        chips=chips,
        wear=None if wear is None else {str(r.chip): wear(r) for r in regions},
        duration_s=time.perf_counter() - t,
    )
