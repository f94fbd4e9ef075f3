"""Pseudo-derivatives ``h'(v)`` of the Heaviside step Θ, with ``v = s − b`` (learning-rules.md §1).

The forward pass always uses ``Θ(v) = 1 if v > 0 else 0``; the backward pass and every
eligibility trace use ``h'(v)`` instead of Θ's (zero almost everywhere) derivative:

- ``"tanh"``:         ``h'(v) = 1 − tanh²(scale·v)``         (JSB runs, hardware run; scale 1)
- ``"fast_sigmoid"``: ``h'(v) = 1/(scale·|v| + 1)²``          (SHD runs; scale 100)
- ``"triangle"``:     ``h'(v) = max(0, 1 − scale·|v|)``
- ``"rectangle"``:    ``h'(v) = 1 if scale·|v| < 1/2 else 0``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hil.errors import ConfigError

PseudoKind = Literal["tanh", "fast_sigmoid", "triangle", "rectangle"]
_KINDS = ("tanh", "fast_sigmoid", "triangle", "rectangle")


def heaviside(v: np.ndarray) -> np.ndarray:
    """``Θ(v)``: 1 where ``v > 0``, else 0 (same dtype as ``v``)."""
    return (v > 0).astype(v.dtype)


@dataclass(frozen=True)
class PseudoDerivative:
    """A surrogate for ``dΘ/dv``.

    Attributes:
        kind: one of ``tanh``, ``fast_sigmoid``, ``triangle``, ``rectangle``.
        scale: steepness (dimensionless); see the module docstring for each formula.
    """

    kind: PseudoKind = "tanh"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"unknown pseudo-derivative {self.kind!r}; expected one of {_KINDS}")
        if not self.scale > 0:
            raise ConfigError(f"pseudo-derivative scale must be > 0, got {self.scale}")

    def __call__(self, v: np.ndarray) -> np.ndarray:
        a = self.scale * v
        if self.kind == "tanh":
            t = np.tanh(a)
            return 1.0 - t * t
        if self.kind == "fast_sigmoid":
            return 1.0 / (np.abs(a) + 1.0) ** 2
        if self.kind == "triangle":
            return np.maximum(0.0, 1.0 - np.abs(a)).astype(v.dtype, copy=False)
        return (np.abs(a) < 0.5).astype(v.dtype)


TANH = PseudoDerivative("tanh", 1.0)
"""``1 − tanh²(v)``: JSB software and hardware runs (Ortner et al., AICAS 2023)."""

FAST_SIGMOID_100 = PseudoDerivative("fast_sigmoid", 100.0)
"""``1/(100|v| + 1)²``: SHD runs (Ortner et al., AICAS 2023)."""
