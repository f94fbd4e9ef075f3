"""Optimisers: SGD with step decay and Adam, with optional global-norm gradient clipping.

Both map gradients ``∇θ`` (by parameter name) to updates ``Δθ`` and apply them through each
parameter's ``update(delta)`` (``MatrixOp`` or ``HostVector``), so a device-backed matrix
receives its ``Δθ`` without the optimiser knowing where the weights live.

- SGD: ``Δθ = −η_e·∇θ`` with ``η_e = η_0·γ^⌊e/k⌋`` (paper: γ = 0.6, k = 5 epochs).
- Adam (Kingma & Ba 2015): ``m ← β1·m + (1−β1)·∇``, ``v ← β2·v + (1−β2)·∇²``,
  ``Δθ = −η_e·m̂/(sqrt(v̂) + ϵ)`` with bias-corrected ``m̂, v̂``; same step decay.
- Clipping: if ``clip_norm`` is set and ``‖∇‖₂ > clip_norm`` (over all parameters), every
  gradient is scaled by ``clip_norm/‖∇‖₂``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from hil.errors import ConfigError, HilError


class NonFiniteGradientError(HilError):
    """A gradient contains NaN or inf (diverged training); no parameter was changed."""


class Param(Protocol):
    """What the optimiser needs of a parameter: its dtype and ``update``; it never reads the
    weights (on a chip that would be a device read)."""

    @property
    def dtype(self) -> np.dtype: ...
    def update(self, delta: np.ndarray) -> None: ...


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings.

    Attributes:
        kind: ``"sgd"`` or ``"adam"``.
        lr: base learning rate η_0.
        decay_factor: γ of the step decay (1 disables it).
        decay_every: k, epochs between decays.
        clip_norm: global gradient-norm bound, or None.
        betas, eps: Adam constants.
    """

    kind: Literal["sgd", "adam"] = "sgd"
    lr: float = 1e-3
    decay_factor: float = 0.6
    decay_every: int = 5
    clip_norm: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "adam"):
            raise ConfigError(f"optimiser must be 'sgd' or 'adam', got {self.kind!r}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.decay_every < 1 or not 0 < self.decay_factor <= 1:
            raise ConfigError("decay_every must be >= 1 and decay_factor in (0, 1]")


def clip_grads(grads: Mapping[str, np.ndarray], clip_norm: float | None) -> dict[str, np.ndarray]:
    """Scale all gradients together so their global L2 norm is at most ``clip_norm``."""
    if clip_norm is None:
        return dict(grads)
    norm = float(
        np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    )
    if norm <= clip_norm or norm == 0.0:
        return dict(grads)
    return {k: g * (clip_norm / norm) for k, g in grads.items()}


class Optimizer:
    """Stateful optimiser over named parameters. Checkpoint :meth:`state_dict`."""

    def __init__(self, params: Mapping[str, Param], cfg: OptimConfig) -> None:
        self.params = dict(params)
        self.cfg = cfg
        self.epoch = 0
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    @property
    def lr(self) -> float:
        """Current η_e (step decay applied)."""
        return self.cfg.lr * self.cfg.decay_factor ** (self.epoch // self.cfg.decay_every)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def deltas(self, grads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Updates ``Δθ`` for ``grads`` (advances Adam's moments)."""
        unknown = set(grads) - set(self.params)
        if unknown:
            raise ConfigError(f"gradients for unknown parameters {sorted(unknown)}")
        bad = [k for k, g in grads.items() if not np.all(np.isfinite(g))]
        if bad:
            raise NonFiniteGradientError(
                f"non-finite gradient for {sorted(bad)}; training diverged: lower the learning "
                "rate or set clip_norm"
            )
        grads = clip_grads(grads, self.cfg.clip_norm)
        lr = self.lr
        if self.cfg.kind == "sgd":
            return {k: -lr * g for k, g in grads.items()}
        self.t += 1
        b1, b2 = self.cfg.betas
        out = {}
        for k, g in grads.items():
            m = self.m.get(k, np.zeros_like(g))
            v = self.v.get(k, np.zeros_like(g))
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            self.m[k], self.v[k] = m, v
            mh = m / (1 - b1**self.t)
            vh = v / (1 - b2**self.t)
            out[k] = -lr * mh / (np.sqrt(vh) + self.cfg.eps)
        return out

    def step(self, grads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Compute and apply the updates; returns them."""
        deltas = self.deltas(grads)
        for k, dlt in deltas.items():
            self.params[k].update(dlt.astype(self.params[k].dtype, copy=False))
        return deltas

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "t": self.t,
            "m": {k: v.copy() for k, v in self.m.items()},
            "v": {k: v.copy() for k, v in self.v.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.t = int(state["epoch"]), int(state["t"])
        self.m = {k: np.array(v) for k, v in state["m"].items()}
        self.v = {k: np.array(v) for k, v in state["v"].items()}
