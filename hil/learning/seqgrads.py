"""Exact per-sequence OSTL/OSTTP gradients without per-step traces (docs/fast-gradients.md).

When the update is applied once per sequence, only ``∇θ = Σ_t Σ_r a_t,r·ε_t[θ, r]`` is needed,
with ``a_t = L_t ⊙ h'_t`` (B, n). The traces of :mod:`hil.learning.traces` obey
``ε_t = ε_{t−1}·J_t + D_t`` (``J_t`` the (n, n) state Jacobian the trace kind keeps, ``D_t``
the direct term). Unrolling and swapping the two sums:

    Σ_t a_t·ε_t = Σ_t a_t·Σ_{τ≤t} D_τ·J_{τ+1}···J_t = Σ_τ D_τ·δ_τ,
    δ_τ = Σ_{t≥τ} J_{τ+1}···J_t·a_t   ⇔   δ_{T−1} = a_{T−1},  δ_τ = a_τ + J_{τ+1}·δ_{τ+1}

(column vectors in the last line: ``(J·δ)_q = Σ_r J[q, r]·δ_r``). One reverse recursion over
(B, n) vectors replaces the (B, m, n) trace recursion, and each matrix gradient becomes one
product over all (t, b): ``∇W = Σ x_tᵀ δ_t``, ``∇H = Σ y_{t−1}ᵀ δ_t``. The direct terms of
the vectors give ``∇b = Σ δ_t·c_t − Σ a_t`` (the ``−1`` of ``e^b = h'·(ε − 1)``) and
``∇d = Σ δ_t·Q^d_t``. With ``J_t = diag(j_t) + diag(h'_{t−1})·Hc`` (per sample):

- ``kind="diag"``: ``j = P + (R + H_jj)·h'_{t−1}``, ``Hc = 0``; ``c = Q^b − (R + H_jj)·h'_{t−1}``
- ``kind="complete"``: ``j = P + R·h'_{t−1}``, ``Hc = H``; ``c = Q^b − R·h'_{t−1}`` and
  the b term gains ``−h'_{t−1} ⊙ (δ_t Hᵀ)``
- instantaneous traces (temporal DRTP, ``recursive=False``): ``J = 0``, so ``δ_t = a_t``.

The sums are the same as the trace form's up to float rounding (the order of additions
differs); ``kind="complete"`` with the true error as learning signal is BPTT for one layer.
"""

from __future__ import annotations

import numpy as np

from hil.learning.snu import Partials
from hil.learning.traces import TraceKind


def _flat_t(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


def reverse_deltas(
    a: np.ndarray,
    jdiag: np.ndarray,
    hp_prev: np.ndarray,
    H: np.ndarray | None,
) -> np.ndarray:
    """``δ_τ = a_τ + J_{τ+1}·δ_{τ+1}`` over axis 0 of ``a`` (T, B, n), ``δ_{T−1} = a_{T−1}``.

    ``J_t·δ = jdiag_t ⊙ δ + h'_{t−1} ⊙ (δ Hᵀ)`` (the second term only when ``H`` is given).
    """
    delta = np.empty_like(a)
    T = a.shape[0]
    acc = delta[T - 1]
    acc[...] = a[T - 1]
    Ht = None if H is None else np.ascontiguousarray(H.T)
    for t in range(T - 2, -1, -1):
        cur = delta[t]
        np.multiply(jdiag[t + 1], acc, out=cur)
        if Ht is not None:
            cur += hp_prev[t + 1] * (acc @ Ht)
        cur += a[t]
        acc = cur
    return delta


def layer_sequence_grads(
    names: tuple[str, ...],
    kind: TraceKind,
    recursive: bool,
    x: np.ndarray,
    y_prev: np.ndarray,
    hp: np.ndarray,
    hp_prev: np.ndarray,
    p: Partials,
    H: np.ndarray | None,
    L: np.ndarray,
) -> dict[str, np.ndarray]:
    """``Σ_{t,b} L_t·e_t`` for the parameters in ``names`` of one layer (see module doc).

    ``x`` (T, B, m), ``y_prev``/``hp``/``hp_prev``/``L`` (T, B, n), partials at every step
    (broadcastable to (T, B, n)), ``H`` (n, n) or None.
    """
    a = L * hp
    full_h = kind == "complete" and H is not None
    h_diag: np.ndarray | float = 0.0
    if H is not None and kind == "diag":
        h_diag = np.diagonal(H).copy()
    r_eff = p.R + h_diag
    if recursive:
        jdiag = np.broadcast_to(p.P + r_eff * hp_prev, a.shape)
        delta = reverse_deltas(a, jdiag, hp_prev, H if full_h else None)
    else:
        delta = a
    out: dict[str, np.ndarray] = {}
    flat_delta = _flat_t(delta)
    for name in names:
        if name == "W":
            out[name] = _flat_t(x).T @ flat_delta
        elif name == "H":
            out[name] = _flat_t(y_prev).T @ flat_delta
        elif name == "b":
            c = p.Qb - r_eff * hp_prev
            g = (delta * c).sum(axis=(0, 1)) - a.sum(axis=(0, 1))
            if full_h:
                assert H is not None
                g = g - (hp_prev * (delta @ H.T)).sum(axis=(0, 1))
            out[name] = g
        else:
            out[name] = (delta * p.Qd).sum(axis=(0, 1))
    return out
