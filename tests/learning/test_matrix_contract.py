"""The MatrixOp contract the trainer relies on: few, time-major calls, and no weight read-back
for OSTTP (so weights can live on a chip)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.learning import (
    DenseMatrix,
    MatrixOp,
    OptimConfig,
    Optimizer,
    ReadoutConfig,
    RuleConfig,
    SNUConfig,
    build_network,
    sequence_grads,
)


class CountingMatrix:
    """A MatrixOp that records every call (name, verb, input ndim)."""

    def __init__(self, name: str, w: np.ndarray, trainable: bool, log: Counter) -> None:
        self.name, self._inner, self.log = name, DenseMatrix(w, trainable=trainable), log

    @property
    def shape(self) -> tuple[int, int]:
        return self._inner.shape

    @property
    def dtype(self) -> np.dtype:
        return self._inner.dtype

    def matmul(self, x: np.ndarray) -> np.ndarray:
        self.log[(self.name, "matmul", x.ndim)] += 1
        return self._inner.matmul(x)

    def read_weights(self) -> np.ndarray:
        self.log[(self.name, "read")] += 1
        return self._inner.read_weights()

    def update(self, delta: np.ndarray) -> None:
        self.log[(self.name, "update")] += 1
        self._inner.update(delta)


def _net(rng, recurrent: bool, log: Counter):
    def factory(name: str, w: np.ndarray, trainable: bool) -> MatrixOp:
        return CountingMatrix(name, w, trainable, log)

    return build_network(
        [SNUConfig(6, 5, recurrent=recurrent)], ReadoutConfig(5, 4), rng, factory=factory
    )


def _batch(rng, T=7, B=3):
    x = (rng.random((T, B, 6)) < 0.4).astype(np.float32)
    target = (rng.random((T, B, 4)) < 0.3).astype(np.float32)
    return x, target, np.ones((T, B), np.float32)


def test_counting_matrix_satisfies_protocol(rng) -> None:
    assert isinstance(CountingMatrix("x", np.zeros((2, 3)), True, Counter()), MatrixOp)


def test_osttp_step_without_recurrence_is_one_call_per_matrix_and_no_readback(rng) -> None:
    log: Counter = Counter()
    net = _net(rng, recurrent=False, log=log)
    res, _ = sequence_grads(net, RuleConfig("osttp"), *_batch(rng))
    assert log == Counter(
        {("h0.W", "matmul", 3): 1, ("out.W", "matmul", 3): 1, ("B0", "matmul", 3): 1}
    )
    log.clear()
    Optimizer(net.parameters(), OptimConfig("sgd", lr=1e-3)).step(res.grads)
    # the optimiser updates and never reads a matrix back
    assert log == Counter({("h0.W", "update"): 1, ("out.W", "update"): 1})


def test_recurrent_h_is_one_call_per_step(rng) -> None:
    log: Counter = Counter()
    net = _net(rng, recurrent=True, log=log)
    sequence_grads(net, RuleConfig("osttp"), *_batch(rng, T=7))
    assert log[("h0.W", "matmul", 3)] == 1
    assert log[("h0.H", "matmul", 2)] == 7
    assert log[("h0.H", "read")] == 1  # diagonal of H for the traces, once per batch


def test_weight_transport_rules_read_weights(rng) -> None:
    log: Counter = Counter()
    net = _net(rng, recurrent=False, log=log)
    sequence_grads(net, RuleConfig("ostl"), *_batch(rng))
    assert log[("out.W", "read")] == 1
    log.clear()
    sequence_grads(net, RuleConfig("bptt"), *_batch(rng))
    assert log[("out.W", "read")] == 1 and log[("h0.W", "read")] == 1


def test_dense_matrix_rejects_bad_shapes() -> None:
    m = DenseMatrix(np.zeros((3, 2)))
    assert m.matmul(np.ones((4, 5, 3))).shape == (4, 5, 2)
    with pytest.raises(ConfigError, match="last axis 4"):
        m.matmul(np.ones((2, 4)))
    with pytest.raises(ConfigError, match="update of shape"):
        m.update(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="2-D"):
        DenseMatrix(np.zeros(3))
