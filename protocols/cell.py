"""The unit cell of the driver contract: 4 PCM devices, their order, and the net conductance.

Every driver reports per-device conductances ``(rows, cols, 4)`` in this order along the
last axis and every MVM computes ``x @ G_net`` with

    G_net = ((G_A+ + G_B+) − (G_A− + G_B−)) / 2          (µS)

(docs/ARCHITECTURE.md, "Shared conventions"; the conformance suite checks both). This is
the one definition ``drivers`` and ``hil`` use; the simulator, which must not import
``protocols``, models the same cell in :mod:`simulator.region` and
:meth:`simulator.Chip.mvm`, and the conformance suite holds ``SimDriver`` to this one.
"""

from __future__ import annotations

import numpy as np

DEVICES_PER_CELL = 4
A_PLUS, B_PLUS, A_MINUS, B_MINUS = 0, 1, 2, 3


def net_conductance(g_us: np.ndarray) -> np.ndarray:
    """``G_net = ((G_A+ + G_B+) − (G_A− + G_B−))/2`` of ``(..., 4)`` conductances (µS)."""
    g = np.asarray(g_us)
    if g.ndim < 1 or g.shape[-1] != DEVICES_PER_CELL:
        raise ValueError(f"conductances must have a last axis of 4 devices, got {g.shape}")
    return ((g[..., A_PLUS] + g[..., B_PLUS]) - (g[..., A_MINUS] + g[..., B_MINUS])) * 0.5
