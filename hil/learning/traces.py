"""OSTL eligibility traces of one SNU layer (learning-rules.md §2), one step at a time.

``ε_t = (ds_t/ds_{t−1})·ε_{t−1} + ∂s_t/∂θ + (∂s_t/∂y_{t−1})·(∂y_{t−1}/∂θ)`` and
``e_t = (∂y_t/∂s_t)·ε_t + ∂y_t/∂θ``; the gradient is ``Σ_t L_t·e_t``. With the partials
``P, R, Q^b, Q^d`` of :mod:`hil.learning.snu` and ``J_t = ds_t/ds_{t−1} =
diag(P_t + R_t·h'_{t−1}) + diag(h'_{t−1})·H``:

Diagonal traces (``kind="diag"``), per neuron j, with ``J^d_t = P_t + (R_t + H_jj)·h'_{t−1}``
(the exact diagonal of J; exact when H is absent or diagonal, the practical "without H"
traces otherwise):

- W: ``ε_t,ij = J^d_t,j·ε_{t−1},ij + x_t,i``,       ``e = h'_t,j·ε_t,ij``      (B, m, n)
- H: ``ε_t,kj = J^d_t,j·ε_{t−1},kj + y_{t−1},k``,   ``e = h'_t,j·ε_t,kj``      (B, n, n)
- b: ``ε_t,j = J^d_t,j·ε_{t−1},j + Q^b_t,j − (R_t,j + H_jj)·h'_{t−1},j``, ``e = h'_t·(ε_t − 1)``
- d: ``ε_t,j = J^d_t,j·ε_{t−1},j + Q^d_t,j``,       ``e = h'_t·ε_t``

For H = 0 these are exactly learning-rules.md §2 (``J^d = D_t``). ``recursive=False`` drops
the ``J^d·ε_{t−1}`` term: the instantaneous trace of temporal DRTP.

Complete traces (``kind="complete"``) keep the full ``J_t`` (rank-3 per sample, O(n⁴) per
step for H): ``ε_t[θ, r] = Σ_q ε_{t−1}[θ, q]·J_t[q, r] + direct_t[θ, r]`` with the direct terms
``x_t,i·δ_jr`` (W), ``y_{t−1},k·δ_jr`` (H), ``δ_qr·(Q^b_t − R_t·h'_{t−1})_r − h'_{t−1},q·H_qr``
(b), ``δ_jr·Q^d_t,r`` (d).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hil.learning.snu import Partials

TraceKind = Literal["diag", "complete"]
Traces = dict[str, np.ndarray]


def init_traces(
    kind: TraceKind, batch: int, m: int, n: int, names: tuple[str, ...], dtype: np.dtype
) -> Traces:
    """Zero traces for the parameters in ``names`` (subset of W, H, b, d)."""
    shapes = {"W": (m, n), "H": (n, n), "b": (n,), "d": (n,)}
    tail = (n,) if kind == "complete" else ()
    return {k: np.zeros((batch, *shapes[k], *tail), dtype=dtype) for k in names}


def diag_step(
    tr: Traces,
    x_t: np.ndarray,
    y_prev: np.ndarray,
    hp_prev: np.ndarray,
    p: Partials,
    h_diag: np.ndarray | float,
    recursive: bool = True,
) -> Traces:
    """Advance diagonal traces by one step **in place** (all arrays (B, ·)); returns ``tr``.

    ``ε ← J^d ⊙ ε + direct`` with two in-place passes over each (B, m, n) trace and no
    temporaries of that size.
    """
    r_eff = p.R + h_diag
    jd = p.P + r_eff * hp_prev if recursive else None
    for name, eps in tr.items():
        if name == "W":
            direct = x_t[:, :, None]
        elif name == "H":
            direct = y_prev[:, :, None]
        elif name == "b":
            direct = p.Qb - r_eff * hp_prev
        else:
            direct = p.Qd
        if jd is None:
            eps[...] = direct
        else:
            eps *= jd[:, None, :] if eps.ndim == 3 else jd
            eps += direct
    return tr


def diag_grads(tr: Traces, L_t: np.ndarray, hp_t: np.ndarray) -> dict[str, np.ndarray]:
    """``Σ_batch L_t·e_t`` per parameter for diagonal traces; ``L_t`` (B, n)."""
    lh = L_t * hp_t
    out = {}
    for name, eps in tr.items():
        if eps.ndim == 3:
            out[name] = np.einsum("bmn,bn->mn", eps, lh)
        elif name == "b":
            out[name] = (lh * (eps - 1.0)).sum(axis=0)
        else:
            out[name] = (lh * eps).sum(axis=0)
    return out


def complete_step(
    tr: Traces,
    x_t: np.ndarray,
    y_prev: np.ndarray,
    hp_prev: np.ndarray,
    p: Partials,
    H: np.ndarray | None,
    recursive: bool = True,
) -> Traces:
    """Advance complete (rank-3 per sample) traces by one step (``recursive=False``: the
    instantaneous trace, only the direct terms)."""
    B, n = hp_prev.shape
    eye = np.eye(n, dtype=hp_prev.dtype)
    jdiag = np.broadcast_to(p.P + p.R * hp_prev, (B, n))
    J = eye * jdiag[:, None, :]
    coupling = 0.0 if H is None else hp_prev[:, :, None] * H
    J = J + coupling
    out: Traces = {}
    for name, eps in tr.items():
        prop = np.matmul(eps, J[(slice(None),) + (None,) * (eps.ndim - 3)]) if recursive else 0.0
        if name == "W":
            direct = x_t[:, :, None, None] * eye
        elif name == "H":
            direct = y_prev[:, :, None, None] * eye
        elif name == "b":
            direct = eye * np.broadcast_to(p.Qb - p.R * hp_prev, (B, n))[:, None, :] - coupling
        else:
            direct = eye * np.broadcast_to(p.Qd, (B, n))[:, None, :]
        out[name] = prop + direct
    return out


def complete_grads(tr: Traces, L_t: np.ndarray, hp_t: np.ndarray) -> dict[str, np.ndarray]:
    """``Σ_batch Σ_r L_t,r·e_t[θ, r]`` for complete traces (b gets ``∂y_t/∂b = −h'_t``)."""
    lh = L_t * hp_t
    out = {}
    for name, eps in tr.items():
        g = np.einsum("b...r,br->...", eps, lh)
        if name == "b":
            g = g - lh.sum(axis=0)
        out[name] = g
    return out
