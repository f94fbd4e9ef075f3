"""A quick health scan of chips through the driver contract (``hil health``).

Per chip and region: RESET every device, ``reads`` reads, ``pulses`` SET pulses to every
device, ``reads`` reads, RESET again (the region is left RESET: run it on chips that hold
nothing to keep, e.g. before a training run places its matrices). Devices are classified
by :func:`hil.characterize.faults.classify` (stuck at RESET, stuck at g_max, dead). A cell
is bad when any of its four devices is; a row (column) is bad when more than
``row_fraction`` of its scanned cells are (a broken word or bit line).

The report (:class:`HealthReport`, JSON) lists the bad cells, rows and columns per chip,
the fault fractions and, when the device keeps a wear ledger (``Driver.wear``), its
SET/RESET totals per chip with the most-worn devices and tiles (:func:`wear_summary`).
The device keeps the latest report (``Driver.keep_health_report``; :func:`merge` carries
over what an earlier report said of chips and regions not scanned this time) and the
trainer's placement avoids what it marks bad (:mod:`hil.trainer.placement`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from drivers.allocation import Defects, defects_from_report
from drivers.base import Driver
from hil.characterize import faults as F
from protocols.region import Region

DEVICE_NAMES = ("A+", "B+", "A-", "B-")


class ChipHealth(BaseModel):
    """Health of one scanned region of one chip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chip: int
    region: Region
    devices: int
    fractions: dict[str, float]
    bad_cells: list[tuple[int, int]] = Field(description="(row, col) of cells with a bad device")
    bad_rows: list[int] = Field(description="rows with more than row_fraction bad cells")
    bad_cols: list[int] = Field(
        default_factory=list, description="columns with more than row_fraction bad cells"
    )
    scanned: str = Field(default="", description="UTC time of this region's scan")


class WornDevice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    row: int
    col: int
    device: str = Field(description="A+, B+, A- or B-")
    set_pulses: int
    resets: int


class WornTile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Region
    set_pulses: int
    resets: int


class ChipWear(BaseModel):
    """The wear ledger of one chip: totals, per-device extremes, the most-worn devices and
    tiles (``tile x tile`` cells), most SET pulses first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chip: int
    set_pulses: int
    resets: int
    devices_pulsed: int = Field(description="devices with at least one SET pulse")
    max_set_pulses: int
    max_resets: int
    mean_set_pulses: float
    most_worn_devices: list[WornDevice]
    most_worn_tiles: list[WornTile]


class HealthReport(BaseModel):
    """What ``hil health`` writes (``--json``), the device keeps and placement reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "pcm-hil-health"
    version: int = 2
    created: str
    device: str
    driver: str
    preset: str
    row_fraction: float
    chips: list[ChipHealth]
    wear: list[ChipWear] | None = Field(
        default=None, description="None: the device keeps no wear ledger (or not asked)"
    )
    duration_s: float

    def bad_cells(self, chip: int) -> set[tuple[int, int]]:
        return {tuple(c) for h in self.chips if h.chip == chip for c in h.bad_cells}  # type: ignore[misc]

    def bad_rows(self, chip: int) -> set[int]:
        return {r for h in self.chips if h.chip == chip for r in h.bad_rows}

    def bad_cols(self, chip: int) -> set[int]:
        return {c for h in self.chips if h.chip == chip for c in h.bad_cols}

    def defects(self) -> dict[int, Defects]:
        """Per chip, what placement must avoid (:class:`drivers.allocation.Defects`)."""
        return defects_from_report(self.model_dump(mode="json"))


def wear_summary(
    chip: int, set_pulses: np.ndarray, resets: np.ndarray, top: int = 10, tile: int = 32
) -> ChipWear:
    """Totals, extremes, the ``top`` most-worn devices and tiles of one chip's ledger."""
    s = np.asarray(set_pulses, np.int64)
    r = np.asarray(resets, np.int64)
    rows, cols, _ = s.shape
    order = np.lexsort((-r.ravel(), -s.ravel()))[:top]  # most SET pulses, then RESETs
    devices = []
    for i in order:
        row, col, dev = np.unravel_index(int(i), s.shape)
        if s.flat[i] == 0 and r.flat[i] == 0:
            break
        devices.append(
            WornDevice(
                row=int(row),
                col=int(col),
                device=DEVICE_NAMES[int(dev)] if s.shape[2] == 4 else str(int(dev)),
                set_pulses=int(s.flat[i]),
                resets=int(r.flat[i]),
            )
        )
    tiles = []
    for r0 in range(0, rows, tile):
        for c0 in range(0, cols, tile):
            region = Region(chip, r0, min(rows, r0 + tile), c0, min(cols, c0 + tile))
            rs, cs = region.slices()
            ts, tr = int(s[rs, cs].sum()), int(r[rs, cs].sum())
            if ts or tr:
                tiles.append(WornTile(region=region, set_pulses=ts, resets=tr))
    tiles.sort(key=lambda t: (-t.set_pulses, -t.resets))
    return ChipWear(
        chip=chip,
        set_pulses=int(s.sum()),
        resets=int(r.sum()),
        devices_pulsed=int((s > 0).sum()),
        max_set_pulses=int(s.max(initial=0)),
        max_resets=int(r.max(initial=0)),
        mean_set_pulses=float(s.mean()) if s.size else 0.0,
        most_worn_devices=devices,
        most_worn_tiles=tiles[:top],
    )


def read_wear(
    drv: Driver, chips: list[int], top: int = 10, tile: int = 32
) -> list[ChipWear] | None:
    """The wear summary of ``chips`` from the device's ledger (None: it keeps none)."""
    info = drv.info()
    out = []
    for chip in chips:
        w = drv.wear(Region(chip, 0, info.rows, 0, info.cols))
        if w is None:
            return None
        out.append(wear_summary(chip, *w, top=top, tile=tile))
    return out


def merge(previous: HealthReport | None, new: HealthReport) -> HealthReport:
    """``new`` plus what ``previous`` (the device's kept report) said of chips and regions
    ``new`` did not scan: an earlier entry inside a newly scanned region is dropped; one
    that overlaps it keeps its bad rows and columns but loses its bad cells there."""
    if previous is None or (previous.driver, previous.preset) != (new.driver, new.preset):
        return new
    carried = []
    for old in previous.chips:
        fresh = [h.region for h in new.chips if h.chip == old.chip]
        if any(r.contains(old.region) for r in fresh):
            continue
        over = [r for r in fresh if r.overlaps(old.region)]
        if over:
            cells = [
                (y, x)
                for y, x in old.bad_cells
                if not any(r.row0 <= y < r.row1 and r.col0 <= x < r.col1 for r in over)
            ]
            old = old.model_copy(update={"bad_cells": cells})
        carried.append(old)
    return new.model_copy(update={"chips": carried + list(new.chips)})


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
    cols = np.flatnonzero(bad.mean(0) > row_fraction)
    cells = np.argwhere(bad)
    return ChipHealth(
        chip=region.chip,
        region=region,
        devices=int(codes.size),
        fractions=F.fractions(codes),
        bad_cells=[(int(r) + region.row0, int(c) + region.col0) for r, c in cells],
        bad_rows=[int(r) + region.row0 for r in rows],
        bad_cols=[int(c) + region.col0 for c in cols],
        scanned=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def scan(
    drv: Driver,
    url: str,
    regions: list[Region],
    *,
    reads: int = 2,
    pulses: int = 8,
    row_fraction: float = 0.25,
    wear: bool = True,
    top: int = 10,
    tile: int = 32,
    tick: Callable[[int], None] | None = None,
) -> HealthReport:
    """Scan every region; ``wear``: add the device's wear ledger of the scanned chips
    (read after the scan, so it counts the scan's own pulses)."""
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
        wear=read_wear(drv, sorted({r.chip for r in regions}), top, tile) if wear else None,
        duration_s=time.perf_counter() - t,
    )
