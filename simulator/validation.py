"""Argument checks shared by :class:`simulator.Chip` methods; each raises a clear error."""

from __future__ import annotations

import numpy as np

from simulator.errors import InputRangeError, RegionError, ShapeError
from simulator.region import DEVICES_PER_CELL, Region

MAX_PULSES_PER_REQUEST = 10_000
"""Largest SET pulse count accepted for one device in one request."""


def check_region(region: object, chip_id: int) -> Region:
    if not isinstance(region, Region):
        raise RegionError(f"expected a simulator.Region, got {type(region).__name__}: {region!r}")
    if region.chip != chip_id:
        raise RegionError(f"{region} addresses chip {region.chip}, but this is chip {chip_id}")
    return region


def check_inputs(x: object, n: int, what: str) -> np.ndarray:
    """``x`` must be a float array ``(batch, n)`` with finite values in [-1, 1]."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise ShapeError(
            f"mvm inputs must be floats in [-1, 1], got dtype {arr.dtype}; "
            "convert with x.astype(np.float32)"
        )
    if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] < 1:
        raise ShapeError(
            f"mvm inputs must have shape (batch, {n}) for the region's {what}, got {arr.shape}"
        )
    lo, hi = arr.min(), arr.max()
    if not (lo >= -1.0 and hi <= 1.0):
        raise InputRangeError(
            f"mvm inputs must be finite and in [-1, 1], got min {lo}, max {hi}; "
            "scale the inputs (NaN also fails this check)"
        )
    return arr


def check_counts(counts: object, region: Region) -> np.ndarray:
    shape = (*region.shape, DEVICES_PER_CELL)
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iu":
        raise ShapeError(f"pulse counts must be an integer array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ShapeError(f"pulse counts must have shape (rows, cols, 4) = {shape}, got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > MAX_PULSES_PER_REQUEST):
        raise InputRangeError(
            f"pulse counts must be in [0, {MAX_PULSES_PER_REQUEST}], got min {arr.min()}, "
            f"max {arr.max()}; negative updates are SET pulses on the other polarity"
        )
    return arr


def check_mask(mask: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise ShapeError(f"{what} must be a bool array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ShapeError(f"{what} must have shape {shape}, got {arr.shape}")
    return arr


def check_targets(target: object, region: Region, limit_us: float) -> np.ndarray:
    arr = np.asarray(target)
    if arr.dtype.kind != "f":
        raise ShapeError(f"program targets must be floats (µS), got dtype {arr.dtype}")
    if arr.shape != region.shape:
        raise ShapeError(
            f"program targets must have shape (rows, cols) = {region.shape}, got {arr.shape}"
        )
    if arr.size:
        worst = float(np.max(np.abs(arr)))
        if not worst <= limit_us:
            raise InputRangeError(
                f"program targets must be finite with |G_net| <= {limit_us:.4g} µS "
                f"(g_max - g_reset of the preset), got max |target| {worst:.4g}; "
                "reduce the mapping scale (hil.trainer.cells.CellMapping)"
            )
    return arr


def check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputRangeError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


def check_tolerance(value: object) -> float:
    tol = float(value)  # type: ignore[arg-type]
    if not 0 <= tol < float("inf"):
        raise InputRangeError(f"tolerance_us must be finite and >= 0, got {value!r}")
    return tol
