"""Readouts and their losses (learning-rules.md §1, §3, §5).

A readout is a leaky integrator of its input spikes ``x_t`` (the last hidden layer's ``y_t``)::

    o_t = τ·o_{t−1} + x_t W_o (+ c)

``τ = 0`` gives the dense layer of the JSB network; ``τ > 0`` the SHD leaky integrator. The
loss turns ``o_t`` into a per-step loss ``E_t`` and its instantaneous error ``g_t = ∂E_t/∂o_t``:

- ``"bce"`` (dense sigmoid): ``p_t = σ(o_t)``, ``E_t = −Σ_k [y*_k log p_k + (1 − y*_k) log(1 − p_k)]``,
  ``g_t = p_t − y*_t`` (the true error of eq. 11).
- ``"ce_over_time"`` (softmax over time, classification): at every step
  ``E_t = −log softmax(o_t)[label]``, ``g_t = softmax(o_t) − onehot(label)``; the prediction
  is ``argmax Σ_t softmax(o_t)``.

Each step's loss is weighted by ``w_{t,b}`` (mask divided by the normaliser, see
:func:`frame_weights`), so ``E = Σ_{t,b} w_{t,b} E_{t,b}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hil.errors import ConfigError

LossKind = Literal["bce", "ce_over_time"]
Reduction = Literal["frame_mean", "sequence_mean"]


@dataclass(frozen=True)
class ReadoutConfig:
    """Readout layer.

    Attributes:
        n_in: input width (last hidden layer's n).
        n_out: outputs (88 keys for JSB, 20 classes for SHD).
        tau: leak τ in [0, 1); 0 is a dense layer.
        bias: whether the readout has a trainable bias c.
        loss: ``"bce"`` (sigmoid, multi-label) or ``"ce_over_time"`` (softmax, one label).
    """

    n_in: int
    n_out: int
    tau: float = 0.0
    bias: bool = True
    loss: LossKind = "bce"

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau < 1.0:
            raise ConfigError(f"readout leak tau must be in [0, 1), got {self.tau}")
        if self.loss not in ("bce", "ce_over_time"):
            raise ConfigError(f"unknown loss {self.loss!r}; expected 'bce' or 'ce_over_time'")


def integrate(a: np.ndarray, tau: float) -> np.ndarray:
    """``o_t = τ·o_{t−1} + a_t`` over the time axis 0 of ``a`` (T, B, n), from ``o_{−1} = 0``."""
    if tau == 0.0:
        return a
    o = np.empty_like(a)
    acc = np.zeros_like(a[0])
    for t in range(a.shape[0]):
        acc = tau * acc + a[t]
        o[t] = acc
    return o


def frame_weights(mask: np.ndarray, reduction: Reduction) -> np.ndarray:
    """Weights ``w`` (T, B) of each frame's loss from a 0/1 ``mask`` (T, B).

    ``frame_mean``: ``1/Σ mask`` (the NLL of learning-rules.md §5 over the batch);
    ``sequence_mean``: ``1/B`` (sum over frames, mean over sequences).
    """
    mask = mask.astype(np.float64)
    if reduction == "frame_mean":
        return mask / max(mask.sum(), 1.0)
    if reduction == "sequence_mean":
        return mask / mask.shape[1]
    raise ConfigError(f"unknown reduction {reduction!r}; expected 'frame_mean' or 'sequence_mean'")


def bce_terms(o: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame BCE summed over keys, ``E`` (..., ) and ``g = σ(o) − y*`` (..., n). Stable.

    With ``z = exp(−|o|)`` (one exponential for both): ``E = Σ_k softplus(o) − y*·o``,
    ``softplus(o) = max(o, 0) + log1p(z)``, and ``σ(o) = 1/(1 + z)`` for ``o ≥ 0``,
    ``z/(1 + z)`` otherwise.
    """
    z = np.exp(-np.abs(o))
    e = np.maximum(o, 0.0) + np.log1p(z) - target * o
    inv = 1.0 / (1.0 + z)
    g = np.where(o >= 0, inv, z * inv) - target
    return e.sum(axis=-1), g


def ce_terms(o: np.ndarray, label_onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step softmax cross-entropy ``E`` (...,) and ``g = softmax(o) − onehot`` (..., n)."""
    z = o - o.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    e = -(label_onehot * logp).sum(axis=-1)
    return e, np.exp(logp) - label_onehot


def loss_terms(kind: LossKind, o: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to :func:`bce_terms` or :func:`ce_terms`."""
    return bce_terms(o, target) if kind == "bce" else ce_terms(o, target)


def weighted_loss(
    kind: LossKind, o: np.ndarray, target: np.ndarray, w: np.ndarray
) -> tuple[float, np.ndarray]:
    """``E = Σ w·E_t`` and the weighted instantaneous error ``w·g_t`` (same shape as ``o``)."""
    e, g = loss_terms(kind, o, target)
    return float((w * e).sum()), (g * w[..., None]).astype(o.dtype, copy=False)
