"""Stuck and dead devices from the RESET reads and the SET curve (``hil characterize``).

A healthy device rises under SET pulses; a faulty one does not. With ``r0`` the mean RESET
read, ``rK`` the mean read after the last SET pulse of the curve and ``rise = rK - r0``:

- *stuck at g_max* when ``r0`` is above the midpoint of the RESET level and the saturated
  level (it ignores RESET; a healthy device reads about g_reset there);
- otherwise *responds* (healthy) when ``rise > 0.1 median(rise)`` (a healthy device after
  30+ pulses is far above that; most devices are healthy);
- otherwise *dead* when its mean read over the whole curve is below ``0.2 g_reset`` (an
  open device reads 0 every time) and *stuck at RESET* if not.

When the RESET level itself is about 0 (``g_reset < 0.02`` µS; aihwkit-like chips) a dead
device and one stuck at RESET read the same, and both count as stuck at RESET.
Codes as in the simulator: 0 ok, 1 stuck at RESET, 2 stuck at g_max, 3 dead.
"""

from __future__ import annotations

import numpy as np

OK, STUCK_RESET, STUCK_GMAX, DEAD = 0, 1, 2, 3
NAMES = {STUCK_RESET: "stuck_reset", STUCK_GMAX: "stuck_gmax", DEAD: "dead"}


def classify(reset_mean: np.ndarray, set_curve: np.ndarray) -> np.ndarray:
    """Fault code per device (uint8), from ``reset_mean (n,)`` and ``set_curve (K+1, n)``."""
    r0 = np.asarray(reset_mean, np.float64)
    rk = np.asarray(set_curve[-1], np.float64)
    rise = rk - r0
    responds = rise > 0.1 * np.median(rise)
    g_reset = float(np.median(r0[responds])) if responds.any() else float(np.median(r0))
    g_sat = float(np.median(rk[responds])) if responds.any() else float(np.max(rk))
    codes = np.full(r0.shape, STUCK_RESET, np.uint8)
    codes[responds] = OK
    if g_reset >= 0.02:
        level = np.mean(set_curve, axis=0)
        codes[~responds & (level < 0.2 * g_reset)] = DEAD
    codes[r0 > 0.5 * (g_reset + g_sat)] = STUCK_GMAX
    return codes


def fractions(codes: np.ndarray) -> dict[str, float]:
    """Fraction of devices in each fault class."""
    n = max(codes.size, 1)
    return {name: float(np.count_nonzero(codes == c)) / n for c, name in NAMES.items()}


def ci95(p: float, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of a fraction ``p`` observed on ``n`` devices."""
    z = 1.96
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(mid - half, 0.0)), float(mid + half)
