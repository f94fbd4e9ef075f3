"""Validation of driver requests against a device's :class:`~protocols.models.DeviceInfo`.

Each function returns the normalised array (contiguous, canonical dtype) or raises an
:class:`~drivers.InvalidRequest` / :class:`~drivers.LimitExceeded` naming the bad value,
what was expected and the fix. :class:`drivers.base.Driver` calls them before any hook.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivers import InvalidRequest, LimitExceeded
from protocols.models import DeviceInfo
from protocols.region import Region


def check_inputs(x: Any, n_in: int, info: DeviceInfo) -> np.ndarray:
    """MVM inputs ``(batch, n_in)`` floating in [-1, 1], batch within limits -> float32."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise InvalidRequest(f"mvm input dtype {x.dtype} is not floating; pass float32/64")
    if x.ndim != 2 or x.shape[1] != n_in:
        hint = " (use x[None, :] for a single vector)" if x.ndim == 1 else ""
        raise InvalidRequest(f"mvm input shape {x.shape} must be (batch, {n_in}){hint}")
    if x.shape[0] < 1:
        raise InvalidRequest("mvm input batch is empty; pass at least one vector")
    if x.shape[0] > info.limits.max_batch:
        raise LimitExceeded(
            f"mvm batch {x.shape[0]} exceeds the device limit {info.limits.max_batch}; "
            f"split it into smaller requests"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())  # NaN propagates and fails both tests
    if not (-1.0 <= lo and hi <= 1.0):
        if not np.all(np.isfinite(x)):
            raise InvalidRequest("mvm input contains NaN or inf")
        raise InvalidRequest(
            f"mvm input spans [{lo:g}, {hi:g}], outside [-1, 1]; inputs are PWM: scale them"
        )
    return x


def check_counts(counts: Any, region: Region, info: DeviceInfo) -> np.ndarray:
    """SET pulse counts ``(rows, cols, 4)`` integers in [0, max_pulses_per_device] -> int32."""
    counts = np.asarray(counts)
    if counts.dtype == np.bool_ or not np.issubdtype(counts.dtype, np.integer):
        raise InvalidRequest(f"pulse counts dtype {counts.dtype} must be an integer type")
    expected = (*region.shape, info.devices_per_cell)
    if counts.shape != expected:
        raise InvalidRequest(
            f"pulse counts shape {counts.shape} must be {expected} "
            f"(rows, cols, devices) for {region}"
        )
    if counts.size and int(counts.min()) < 0:
        raise InvalidRequest("pulse counts must be >= 0 (SET pulses only; use reset_mask)")
    peak = int(counts.max()) if counts.size else 0
    if peak > info.limits.max_pulses_per_device:
        raise LimitExceeded(
            f"{peak} pulses on one device exceeds the per-request limit "
            f"{info.limits.max_pulses_per_device}; split into several requests"
        )
    return np.ascontiguousarray(counts, dtype=np.int32)


def check_mask(mask: Any, region: Region, info: DeviceInfo) -> np.ndarray:
    """RESET mask ``(rows, cols, 4)`` bool."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise InvalidRequest(f"reset_mask dtype {mask.dtype} must be bool")
    expected = (*region.shape, info.devices_per_cell)
    if mask.shape != expected:
        raise InvalidRequest(f"reset_mask shape {mask.shape} must be {expected}")
    return np.ascontiguousarray(mask)


def check_target(target: Any, region: Region, info: DeviceInfo) -> np.ndarray:
    """Net conductance targets ``(rows, cols)`` µS, finite, ``|T| <= g_net_max_us`` -> float32."""
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.floating):
        raise InvalidRequest(f"target_us dtype {target.dtype} must be floating (µS)")
    if target.shape != region.shape:
        raise InvalidRequest(
            f"target_us shape {target.shape} must be {region.shape}: one net "
            f"conductance G_net per cell of {region}"
        )
    if not np.all(np.isfinite(target)):
        raise InvalidRequest("target_us contains NaN or inf")
    peak = float(np.max(np.abs(target)))
    g_net_max = float(info.g_net_max_us or info.g_max_us - info.g_min_us)
    if peak > g_net_max:
        raise InvalidRequest(
            f"|target_us| reaches {peak:g} µS, beyond the largest net conductance "
            f"{g_net_max:g} µS of this device; clip or rescale the targets"
        )
    return np.ascontiguousarray(target, dtype=np.float32)


def finite_float(v: Any, name: str) -> float:
    """``v`` as a finite float, else ``InvalidRequest`` naming ``name``."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name}={v!r} must be a number") from None
    if not math.isfinite(f):
        raise InvalidRequest(f"{name}={f} must be finite")
    return f


def as_int(v: Any, name: str) -> int:
    """``v`` as an int (bools refused), else ``InvalidRequest`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise InvalidRequest(f"{name}={v!r} must be an int")
    return int(v)
