"""Spiking neural unit (SNU) layer: pure step function and its local partial derivatives.

Row-vector convention (learning-rules.md §1): ``x ∈ R^m``, ``y ∈ R^n``, ``W`` (m, n),
``H`` (n, n), thresholds ``b`` and decays ``d`` (n,). ``i_t = x_t W + y_{t−1} H`` is the input
current (computed by the caller through :class:`~hil.learning.matrix.MatrixOp`).

- full reset: ``s_t = i_t + d·s_{t−1}·(1 − y_{t−1})``
- soft reset: ``s_t = i_t + d·s_{t−1} − y_{t−1}·b``
- both:       ``y_t = Θ(s_t − b)``, with pseudo-derivative ``h'_t = h'(s_t − b)``

Local partial derivatives (diagonal, per neuron j), shared by BPTT and the OSTL traces so each
equation exists once:

- ``P_t = ∂s_t/∂s_{t−1}`` (direct):       full ``d·(1 − y_{t−1})``;  soft ``d``
- ``R_t = ∂s_t/∂y_{t−1}`` (direct, no H):  full ``−d·s_{t−1}``;       soft ``−b``
- ``Q^b_t = ∂s_t/∂b`` (direct):           full ``0``;                soft ``−y_{t−1}``
- ``Q^d_t = ∂s_t/∂d`` (direct):           full ``s_{t−1}·(1 − y_{t−1})``; soft ``s_{t−1}``

so that ``ds_t/ds_{t−1} = diag(P_t + R_t·h'_{t−1}) + diag(h'_{t−1})·H``; for ``H = 0`` the
diagonal is learning-rules.md's ``D_t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from hil.errors import ConfigError
from hil.learning.pseudo import TANH, PseudoDerivative, heaviside

Reset = Literal["full", "soft"]


@dataclass(frozen=True)
class SNUConfig:
    """Shape and dynamics of one SNU layer.

    Attributes:
        n_in: input width m.
        n_out: number of neurons n.
        reset: ``"full"`` or ``"soft"`` (learning-rules.md §1).
        recurrent: whether the layer has a recurrent matrix H.
        decay: initial decay d (dimensionless, in [0, 1)).
        train_decay: whether d is trained.
        train_threshold: whether b is trained.
        threshold_init: initial threshold b (same for every neuron).
        pseudo: the pseudo-derivative h'.
        detach_reset: treat ``y_{t−1}`` inside the reset term as a constant in every
            gradient (``R_t = 0``): a common SNN training heuristic, *not* the exact gradient.
            BPTT and OSTL still agree with each other under it.
    """

    n_in: int
    n_out: int
    reset: Reset = "full"
    recurrent: bool = True
    decay: float = 0.5
    train_decay: bool = False
    train_threshold: bool = True
    threshold_init: float = 0.0
    pseudo: PseudoDerivative = TANH
    detach_reset: bool = False

    def __post_init__(self) -> None:
        if self.n_in < 1 or self.n_out < 1:
            raise ConfigError(
                f"layer widths must be >= 1, got n_in={self.n_in}, n_out={self.n_out}"
            )
        if self.reset not in ("full", "soft"):
            raise ConfigError(f"reset must be 'full' or 'soft', got {self.reset!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"decay d must be in [0, 1), got {self.decay}")


class SNUState(NamedTuple):
    """State carried between steps: membrane ``s`` and output ``y``, each (B, n)."""

    s: np.ndarray
    y: np.ndarray


class SNUParams(NamedTuple):
    """Host-side parameters the step needs: thresholds ``b`` and decays ``d``, each (n,)."""

    b: np.ndarray
    d: np.ndarray


def initial_state(batch: int, n: int, dtype: np.dtype | type = np.float32) -> SNUState:
    """Zero state for a batch of ``batch`` sequences."""
    z = np.zeros((batch, n), dtype=dtype)
    return SNUState(z, z.copy())


def snu_step(
    i_t: np.ndarray, state: SNUState, params: SNUParams, reset: Reset
) -> tuple[np.ndarray, SNUState]:
    """One SNU step. ``i_t = x_t W + y_{t−1} H`` (B, n). Returns ``(y_t, SNUState(s_t, y_t))``."""
    s_prev, y_prev = state
    if reset == "full":
        s = i_t + params.d * s_prev * (1.0 - y_prev)
    else:
        s = i_t + params.d * s_prev - y_prev * params.b
    y = heaviside(s - params.b)
    return y, SNUState(s, y)


class Partials(NamedTuple):
    """Diagonal local partials at step t (each broadcastable to (..., n)); see module doc."""

    P: np.ndarray
    R: np.ndarray
    Qb: np.ndarray | float
    Qd: np.ndarray


def partials(
    s_prev: np.ndarray,
    y_prev: np.ndarray,
    params: SNUParams,
    reset: Reset,
    detach_reset: bool = False,
) -> Partials:
    """``P_t, R_t, Q^b_t, Q^d_t`` from the previous state ``(s_{t−1}, y_{t−1})``.

    ``detach_reset`` sets ``R_t = 0`` (no gradient through the reset's use of ``y_{t−1}``).
    """
    if reset == "full":
        keep = 1.0 - y_prev
        R = np.zeros_like(s_prev) if detach_reset else -params.d * s_prev
        return Partials(P=params.d * keep, R=R, Qb=0.0, Qd=s_prev * keep)
    R = np.zeros_like(s_prev) if detach_reset else np.broadcast_to(-params.b, s_prev.shape)
    return Partials(P=np.broadcast_to(params.d, s_prev.shape), R=R, Qb=-y_prev, Qd=s_prev)
