"""Optimisers: SGD step decay, Adam against torch, global-norm clipping, checkpoint state."""

from __future__ import annotations

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.learning import (
    DenseMatrix,
    HostVector,
    NonFiniteGradientError,
    OptimConfig,
    Optimizer,
    clip_grads,
)
from tests.conftest import NEEDS_REFERENCE


def test_sgd_step_decay_every_five_epochs() -> None:
    w = DenseMatrix(np.zeros((2, 2)), np.float64)
    opt = Optimizer({"w": w}, OptimConfig("sgd", lr=1e-3))
    lrs = []
    for epoch in range(11):
        opt.set_epoch(epoch)
        lrs.append(opt.lr)
    assert lrs[:5] == [1e-3] * 5
    assert lrs[5] == pytest.approx(6e-4) and lrs[9] == pytest.approx(6e-4)
    assert lrs[10] == pytest.approx(1e-3 * 0.36)
    opt.step({"w": np.ones((2, 2))})
    np.testing.assert_allclose(w.value(), -1e-3 * 0.36)


def test_adam_matches_torch(rng) -> None:
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    w0 = rng.normal(size=(3, 2))
    w = DenseMatrix(w0, np.float64)
    b = HostVector(np.zeros(2), np.float64)
    opt = Optimizer({"w": w, "b": b}, OptimConfig("adam", lr=1e-2))
    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    topt = torch.optim.Adam([tw, tb], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        gw, gb = rng.normal(size=(3, 2)), rng.normal(size=2)
        opt.step({"w": gw, "b": gb})
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
    np.testing.assert_allclose(w.value(), tw.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.value(), tb.detach().numpy(), rtol=1e-12, atol=1e-14)
    state = opt.state_dict()
    other = Optimizer({"w": w, "b": b}, OptimConfig("adam", lr=1e-2))
    other.load_state_dict(state)
    assert other.t == 5
    np.testing.assert_array_equal(other.m["w"], opt.m["w"])


def test_clipping_scales_global_norm() -> None:
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    c = clip_grads(g, 1.0)
    norm = np.sqrt(sum(float((v**2).sum()) for v in c.values()))
    assert norm == pytest.approx(1.0)
    np.testing.assert_allclose(c["a"], [0.6, 0.0])
    assert clip_grads(g, 10.0)["a"] is g["a"]


def test_bad_config_and_unknown_params() -> None:
    with pytest.raises(ConfigError, match="learning rate"):
        OptimConfig(lr=0.0)
    opt = Optimizer({"w": DenseMatrix(np.zeros((1, 1)))}, OptimConfig())
    with pytest.raises(ConfigError, match="unknown parameters"):
        opt.step({"v": np.zeros((1, 1))})


def test_non_finite_gradient_is_refused_and_changes_nothing() -> None:
    w = DenseMatrix(np.ones((1, 2)), np.float64)
    opt = Optimizer({"w": w}, OptimConfig())
    with pytest.raises(NonFiniteGradientError, match="diverged"):
        opt.step({"w": np.array([[np.nan, 1.0]])})
    np.testing.assert_array_equal(w.value(), 1.0)
