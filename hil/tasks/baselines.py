"""Honest JSB baselines computed by the library (learning-rules.md §5).

- Constant per-key predictor: ``p_k = (n_k + ½)/(N + 1)`` from the N predicted training
  frames (target frames, t ≥ 1) with key k on in n_k of them (add-½ smoothing so unseen keys
  get finite loss). It learns no time structure: test NLL 11.09 on the standard file.
- Logistic regression from the previous step: ``p_t = σ(x_t A + c)`` with ``x_t`` the roll
  at t and target the roll at t+1, fitted on the training frames by full-batch Adam on the
  mean frame NLL plus ``½·l2·‖A‖²``; the number of iterations is chosen on the validation
  split (early stopping). Measured test NLL 9.03 (learning-rules.md quotes ≈ 9.06).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hil.tasks.jsb import frame_bce, split_nll
from hil.tasks.pianoroll import N_KEYS, PianoRollSplits


class Rolls(Protocol):
    """Training and validation piano rolls (:class:`PianoRollSplits`, a JSB task's data)."""

    @property
    def train(self) -> list[np.ndarray]: ...

    @property
    def valid(self) -> list[np.ndarray]: ...


def _frames(rolls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([r[:-1] for r in rolls]).astype(np.float64)
    y = np.concatenate([r[1:] for r in rolls]).astype(np.float64)
    return x, y


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ConstantPredictor:
    """Per-key frequencies ``p`` (88,)."""

    p: np.ndarray

    @classmethod
    def fit(cls, data: Rolls) -> ConstantPredictor:
        _, y = _frames(data.train)
        return cls((y.sum(axis=0) + 0.5) / (y.shape[0] + 1.0))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(_logit(self.p), x.shape)

    def nll(self, rolls: list[np.ndarray]) -> float:
        return split_nll(self.logits, rolls)


@dataclass(frozen=True)
class LogisticPredictor:
    """``p_t = σ(x_t A + c)``: A (88, 88), c (88,)."""

    A: np.ndarray
    c: np.ndarray

    @classmethod
    def fit(
        cls,
        data: Rolls,
        iterations: int = 150,
        lr: float = 0.1,
        l2: float = 1e-4,
    ) -> LogisticPredictor:
        """Full-batch Adam; keeps the iterate with the lowest validation NLL."""
        x, y = _frames(data.train)
        xv, yv = _frames(data.valid)
        A = np.zeros((N_KEYS, N_KEYS))
        c = _logit(ConstantPredictor.fit(data).p)
        m = [np.zeros_like(A), np.zeros_like(c)]
        v = [np.zeros_like(A), np.zeros_like(c)]
        best = (np.inf, A.copy(), c.copy())
        n = x.shape[0]
        for it in range(1, iterations + 1):
            g = 1.0 / (1.0 + np.exp(-(x @ A + c))) - y
            grads = [x.T @ g / n + l2 * A, g.mean(axis=0)]
            for i, (p, gr) in enumerate(zip((A, c), grads, strict=True)):
                m[i] = 0.9 * m[i] + 0.1 * gr
                v[i] = 0.999 * v[i] + 0.001 * gr * gr
                p -= lr * (m[i] / (1 - 0.9**it)) / (np.sqrt(v[i] / (1 - 0.999**it)) + 1e-8)
            if it % 10 == 0:
                val = float(frame_bce(xv @ A + c, yv).sum(axis=1).mean())
                if val < best[0]:
                    best = (val, A.copy(), c.copy())
        return cls(best[1], best[2])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.A + self.c

    def nll(self, rolls: list[np.ndarray]) -> float:
        return split_nll(self.logits, rolls)


def baseline_nlls(data: PianoRollSplits) -> dict[str, dict[str, float]]:
    """Valid and test NLL of both baselines."""
    out = {}
    for name, model in (
        ("constant", ConstantPredictor.fit(data)),
        ("logistic", LogisticPredictor.fit(data)),
    ):
        out[name] = {"valid_nll": model.nll(data.valid), "test_nll": model.nll(data.test)}
    return out
