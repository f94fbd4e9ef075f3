"""The one matrix interface every layer's products go through.

A :class:`MatrixOp` holds an ``(m, n)`` weight matrix ``W`` in the row-vector convention of
learning-rules.md: ``matmul(x) = x W`` for ``x`` of shape ``(..., m)``, giving ``(..., n)``.
Learning code only calls ``matmul`` (forward currents, learning-signal projections ``y*·B``),
``read_weights`` (weight transport and BPTT, which need ``Wᵀ``) and ``update``
(``W += delta``); ``shape`` and ``dtype`` are plain attributes. :class:`DenseMatrix` keeps
``W`` in host memory; a device-backed implementation (weights on a PCM chip) implements the
same members and the learning code does not change. There, ``read_weights`` is the only
member that reads the chip's conductances (a noisy read of the whole region, one request),
so its name says so: ``shape``, ``dtype``, ``matmul`` and ``update`` never read weights
back, and OSTTP/DRTP without a recurrent ``H`` never call ``read_weights`` at all.

Batching contract: a layer without on-chip recurrence calls ``matmul`` once on a time-major
``(T, B, m)`` array for a whole batch; the recurrent ``H`` is called once per step on
``(B, n)``. An implementation must therefore accept any number of leading axes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from hil.errors import ConfigError


@runtime_checkable
class MatrixOp(Protocol):
    """An ``(m, n)`` matrix that can be multiplied, read and updated."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: input width, output width (no device access)."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """dtype of the weights :meth:`read_weights` returns and updates are given in (no
        device access)."""
        ...

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``x W`` for ``x`` of shape ``(..., m)``; returns ``(..., n)``."""
        ...

    def read_weights(self) -> np.ndarray:
        """The current weights as an ``(m, n)`` array (a copy or a read-only view). On a
        device this reads the chip (one noisy read of the region)."""
        ...

    def update(self, delta: np.ndarray) -> None:
        """Apply ``W += delta`` (``delta`` of shape ``(m, n)``)."""
        ...


def check_operand(op: MatrixOp, x: np.ndarray) -> None:
    """Raise :class:`ConfigError` when ``x``'s last axis does not match ``op``'s rows."""
    if x.shape[-1] != op.shape[0]:
        raise ConfigError(
            f"matmul input has last axis {x.shape[-1]}, but the matrix is {op.shape} "
            f"(expects (..., {op.shape[0]})); check the layer widths"
        )


class DenseMatrix:
    """Host (numpy) implementation of :class:`MatrixOp`.

    Args:
        w: initial weights, shape ``(m, n)``; copied.
        dtype: storage and compute dtype (float32 for training, float64 for exactness tests).
        trainable: if False, :meth:`update` raises (feedback matrices ``B`` are fixed).
    """

    def __init__(
        self, w: np.ndarray, dtype: np.dtype | type = np.float32, trainable: bool = True
    ) -> None:
        w = np.array(w, dtype=dtype, copy=True)
        if w.ndim != 2:
            raise ConfigError(f"a matrix must be 2-D (m, n), got shape {w.shape}")
        self._w = w
        self.trainable = trainable

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._w.shape[0]), int(self._w.shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return self._w.dtype

    def matmul(self, x: np.ndarray) -> np.ndarray:
        check_operand(self, x)
        return np.asarray(x, dtype=self._w.dtype) @ self._w

    def value(self) -> np.ndarray:
        """The weights, a read-only view of host memory."""
        view = self._w.view()
        view.flags.writeable = False
        return view

    def read_weights(self) -> np.ndarray:
        """:meth:`value`: on the host, reading the weights costs nothing."""
        return self.value()

    def update(self, delta: np.ndarray) -> None:
        if not self.trainable:
            raise ConfigError(
                "this matrix is fixed (a feedback matrix B must never change during a run)"
            )
        if delta.shape != self._w.shape:
            raise ConfigError(f"update of shape {delta.shape} for a matrix of shape {self.shape}")
        self._w += delta.astype(self._w.dtype, copy=False)

    def assign(self, w: np.ndarray) -> None:
        """Set ``W`` exactly (restoring a checkpoint; not a learning update)."""
        if np.shape(w) != self._w.shape:
            raise ConfigError(f"assign of shape {np.shape(w)} to a matrix of shape {self.shape}")
        self._w[...] = w

    def __repr__(self) -> str:
        return f"DenseMatrix(shape={self.shape}, dtype={self._w.dtype}, trainable={self.trainable})"


class HostVector:
    """A trainable host-side vector parameter (thresholds ``b``, decays ``d``, readout bias).

    Same ``value``/``update`` verbs as :class:`MatrixOp`, so optimisers treat all parameters
    alike. These always live on the host (the SNU dynamics run there).
    """

    def __init__(self, v: np.ndarray, dtype: np.dtype | type = np.float32) -> None:
        self._v = np.array(v, dtype=dtype, copy=True).reshape(-1)

    @property
    def shape(self) -> tuple[int]:
        return (int(self._v.shape[0]),)

    @property
    def dtype(self) -> np.dtype:
        return self._v.dtype

    def value(self) -> np.ndarray:
        view = self._v.view()
        view.flags.writeable = False
        return view

    def update(self, delta: np.ndarray) -> None:
        if delta.shape != self._v.shape:
            raise ConfigError(f"update of shape {delta.shape} for a vector of shape {self.shape}")
        self._v += delta.astype(self._v.dtype, copy=False)

    def assign(self, v: np.ndarray) -> None:
        """Set the vector exactly (restoring a checkpoint; not a learning update)."""
        if np.shape(v) != self._v.shape:
            raise ConfigError(f"assign of shape {np.shape(v)} to a vector of shape {self.shape}")
        self._v[...] = v

    def __repr__(self) -> str:
        return f"HostVector(shape={self.shape}, dtype={self._v.dtype})"
