"""The trainer's cell arithmetic: weight <-> µS mapping, Boybat pulse arbitration and
refresh planning (used by :mod:`hil.trainer.device_matrix` and the chip backend; it lived
in ``simulator/`` before #11, where nothing used it).

Unit cell (pcm-physics §1, docs/ARCHITECTURE.md): four devices ``A+, B+, A-, B-`` (last
axis, in this order) of equal significance,

    G_net = ((G_A+ + G_B+) - (G_A- + G_B-)) / 2          (µS)
    W     = G_net / scale,   scale = g_net_max_us / w_max  (µS per weight unit)

with one scale per mapped matrix. Optional quantisation rounds weights to
``step = w_max / levels`` (``levels`` steps per sign).

Arbitration (Boybat et al. 2018): a signed pulse count ``n_ij`` goes as ``|n_ij|`` SET
pulses to one device of the ``+`` side (``n > 0``) or the ``-`` side (``n < 0``); which of
the two devices (A or B) is chosen by a *global* round-robin counter ``c``: device
``c mod 2`` of that side, and ``c <- c + 1`` after each update.

Refresh (aihwkit ``OneSidedUnitCell`` style): with side sums ``G+ = G_A+ + G_B+`` and
``G- = G_A- + G_B-`` and ``g_side_max = 2 g_max``, a cell is refreshed when
``max(G+, G-) > hi g_side_max`` and ``min(G+, G-) > lo g_side_max`` (defaults 0.75,
0.25): both sides have climbed, so the net weight is losing range. The refresh itself is:
read, RESET, re-program ``G_net`` (``Chip.program(..., cell_mask=plan)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.errors import ConfigError
from protocols.cell import A_MINUS, A_PLUS, B_MINUS, B_PLUS, DEVICES_PER_CELL, net_conductance

__all__ = [
    "CellMapping",
    "RefreshConfig",
    "arbitrate",
    "net_conductance",
    "plan_refresh",
]


class InputRangeError(ConfigError):
    """A mapping, arbitration or refresh parameter is out of range."""


class ShapeError(ConfigError):
    """An array given to the cell arithmetic has the wrong shape or dtype."""


@dataclass(frozen=True)
class CellMapping:
    """Linear weight <-> net-conductance map of one matrix: ``G_net = scale W``."""

    w_max: float
    """weight magnitude mapped to ``g_net_max_us`` (weight units)"""
    g_net_max_us: float
    """net conductance for ``|W| = w_max`` (µS)"""
    levels: int | None = None
    """quantisation steps per sign (None: no quantisation)"""

    def __post_init__(self) -> None:
        for name in ("w_max", "g_net_max_us"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise InputRangeError(f"CellMapping.{name} must be finite and > 0, got {value!r}")
        if self.levels is not None and (isinstance(self.levels, bool) or self.levels < 1):
            raise InputRangeError(f"CellMapping.levels must be None or >= 1, got {self.levels!r}")

    @classmethod
    def for_weights(
        cls,
        w: np.ndarray,
        g_net_max_us: float,
        headroom: float = 1.0,
        levels: int | None = None,
    ) -> CellMapping:
        """Map ``headroom * max|w|`` to ``g_net_max_us`` (``headroom >= 1`` leaves room to grow)."""
        w_abs = float(np.max(np.abs(w))) if np.size(w) else 0.0
        if not headroom >= 1:
            raise InputRangeError(f"headroom must be >= 1, got {headroom!r}")
        return cls(max(w_abs * headroom, 1e-12), g_net_max_us, levels)

    @property
    def scale(self) -> float:
        """µS per weight unit."""
        return self.g_net_max_us / self.w_max

    @property
    def step(self) -> float:
        """Weight quantisation step (weight units); 0 without quantisation."""
        return 0.0 if self.levels is None else self.w_max / self.levels

    def quantize(self, w: np.ndarray) -> np.ndarray:
        """Clip to ``[-w_max, w_max]`` and round to the step grid (if any)."""
        w = np.clip(np.asarray(w, dtype=np.float64), -self.w_max, self.w_max)
        if self.levels is None:
            return w
        return np.round(w / self.step) * self.step

    def to_conductance(self, w: np.ndarray) -> np.ndarray:
        """Net conductance targets (µS) of weights ``w``: ``scale * quantize(w)``."""
        return self.quantize(w) * self.scale

    def to_weight(self, g_net_us: np.ndarray) -> np.ndarray:
        """Weights of net conductances (µS), or MVM outputs (µS) to ``x @ W`` units."""
        return np.asarray(g_net_us, dtype=np.float64) / self.scale


def arbitrate(signed_counts: np.ndarray, counter: int) -> tuple[np.ndarray, int]:
    """Spread signed pulse counts ``(rows, cols)`` over the 4 devices (Boybat 2018).

    Returns ``(counts (rows, cols, 4) int32, new_counter)``: ``n > 0`` goes to device
    ``counter % 2`` (A+ or B+), ``n < 0`` to ``2 + counter % 2`` (A- or B-);
    ``new_counter = counter + 1``.
    """
    n = np.asarray(signed_counts)
    if n.dtype.kind not in "iu" or n.ndim != 2:
        raise ShapeError(f"signed_counts must be a 2-D integer array, got {n.dtype} {n.shape}")
    if isinstance(counter, bool) or int(counter) < 0:
        raise InputRangeError(f"counter must be an int >= 0, got {counter!r}")
    which = int(counter) % 2
    out = np.zeros((*n.shape, DEVICES_PER_CELL), dtype=np.int32)
    out[..., A_PLUS + which] = np.maximum(n, 0)
    out[..., A_MINUS + which] = np.maximum(-n, 0)
    return out, int(counter) + 1


@dataclass(frozen=True)
class RefreshConfig:
    """Refresh thresholds as fractions of the side maximum ``2 g_max`` (aihwkit defaults)."""

    hi: float = 0.75
    """the larger side must exceed ``hi * 2 g_max``"""
    lo: float = 0.25
    """and the smaller side ``lo * 2 g_max``"""

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi <= 1:
            raise InputRangeError(
                f"RefreshConfig needs 0 <= lo <= hi <= 1, got lo={self.lo}, hi={self.hi}"
            )


def plan_refresh(
    g_us: np.ndarray, g_max_us: float, config: RefreshConfig | None = None
) -> np.ndarray:
    """Cells ``(rows, cols)`` bool to refresh, from read conductances ``(rows, cols, 4)``."""
    cfg = config or RefreshConfig()
    g = np.asarray(g_us)
    if g.ndim != 3 or g.shape[-1] != DEVICES_PER_CELL:
        raise ShapeError(f"conductances must have shape (rows, cols, 4), got {g.shape}")
    if not g_max_us > 0:
        raise InputRangeError(f"g_max_us must be > 0, got {g_max_us!r}")
    side_max = 2.0 * g_max_us
    g_plus = g[..., A_PLUS] + g[..., B_PLUS]
    g_minus = g[..., A_MINUS] + g[..., B_MINUS]
    hi_side = np.maximum(g_plus, g_minus)
    lo_side = np.minimum(g_plus, g_minus)
    return (hi_side > cfg.hi * side_max) & (lo_side > cfg.lo * side_max)
