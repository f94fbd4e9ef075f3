"""Backpropagation through time: the hand-written numpy reference.

For one SNU layer with incoming error ``L_t = ∂E_t/∂y_t`` (T, B, n), using the partials
``P, R, Q^b, Q^d`` of :mod:`hil.learning.snu` (written independently of the traces' ``D_t``),
backwards from t = T−1 with ``δs_T = 0``:

- ``g^y_t = L_t + δs_{t+1}·Hᵀ + δs_{t+1}·R_{t+1}``      (total ``dE/dy_t`` with s_t fixed)
- ``δs_t  = g^y_t·h'_t + δs_{t+1}·P_{t+1}``            (total ``dE/ds_t``)
- ``∇W = Σ_t x_tᵀ δs_t``, ``∇H = Σ_t y_{t−1}ᵀ δs_t``, ``∇b = Σ_t (−g^y_t·h'_t + δs_t·Q^b_t)``,
  ``∇d = Σ_t δs_t·Q^d_t``, and the error for the layer below ``∂E/∂x_t = δs_t Wᵀ``.

The readout ``o_t = τ·o_{t−1} + y_t W_o + c`` back-propagates ``δo_t = g_t + τ·δo_{t+1}``
(``g_t = ∂E_t/∂o_t``): ``∇W_o = Σ_t y_tᵀ δo_t``, ``∇c = Σ_t δo_t``, ``∂E/∂y_t = δo_t W_oᵀ``.
"""

from __future__ import annotations

import numpy as np

from hil.learning.network import LayerRecord, Network, SNULayer, shifted
from hil.learning.snu import partials


def _outer_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Σ_{t,b} a_{t,b}ᵀ b_{t,b}`` for (T, B, m) and (T, B, n) → (m, n)."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def reverse_integrate(g: np.ndarray, tau: float) -> np.ndarray:
    """``δ_t = g_t + τ·δ_{t+1}`` over axis 0 (the adjoint of the readout's leak)."""
    if tau == 0.0:
        return g
    out = np.empty_like(g)
    acc = np.zeros_like(g[0])
    for t in range(g.shape[0] - 1, -1, -1):
        acc = g[t] + tau * acc
        out[t] = acc
    return out


def layer_bptt(
    layer: SNULayer, rec: LayerRecord, L: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gradients of one SNU layer given ``L`` (T, B, n); returns (grads, ∂E/∂x (T, B, m))."""
    params = layer.params()
    reset = layer.cfg.reset
    hp = layer.cfg.pseudo(rec.s - params.b)
    p = partials(shifted(rec.s), shifted(rec.y), params, reset, layer.cfg.detach_reset)
    P = np.broadcast_to(p.P, rec.s.shape)
    R = np.broadcast_to(p.R, rec.s.shape)
    Ht = None if layer.H is None else layer.H.read_weights().T
    T = rec.s.shape[0]
    gy = np.empty_like(rec.s)
    ds = np.empty_like(rec.s)
    nxt = np.zeros_like(rec.s[0])
    for t in range(T - 1, -1, -1):
        g = L[t].copy()
        cur = g * hp[t]
        if t + 1 < T:
            g += nxt * R[t + 1]
            if Ht is not None:
                g += nxt @ Ht
            cur = g * hp[t] + nxt * P[t + 1]
        gy[t], ds[t] = g, cur
        nxt = cur
    grads = {"W": _outer_sum(rec.x, ds)}
    if layer.H is not None:
        grads["H"] = _outer_sum(shifted(rec.y), ds)
    grads["b"] = (-(gy * hp) + ds * p.Qb).sum(axis=(0, 1))
    grads["d"] = (ds * p.Qd).sum(axis=(0, 1))
    return grads, ds @ layer.W.read_weights().T


def network_bptt(net: Network, traj, g: np.ndarray) -> dict[str, np.ndarray]:
    """BPTT gradients of every trainable parameter, given ``g_t = ∂E_t/∂o_t`` (T, B, k)."""
    ro = net.readout
    d_o = reverse_integrate(g, ro.cfg.tau)
    y_top = traj.layers[-1].y
    grads = {"out.W": _outer_sum(y_top, d_o)}
    if ro.c is not None:
        grads["out.c"] = d_o.sum(axis=(0, 1))
    L = d_o @ ro.W.read_weights().T
    for li in range(len(net.hidden) - 1, -1, -1):
        lg, L = layer_bptt(net.hidden[li], traj.layers[li], L)
        for k, v in lg.items():
            grads[f"h{li}.{k}"] = v
    return {k: v for k, v in grads.items() if k in net.parameters()}
