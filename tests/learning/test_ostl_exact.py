"""OSTL == BPTT for a single SNU layer (learning-rules.md §2), checked two independent ways:
against the hand-written numpy BPTT and against torch autograd through the same forward."""

from __future__ import annotations

import numpy as np
import pytest

from hil.learning import RuleConfig, sequence_grads
from tests.conftest import NEEDS_REFERENCE
from tests.learning.helpers import rel_err, tiny_batch, tiny_net

TOL = 1e-6
CASES = [
    ("full", False, "diag"),
    ("soft", False, "diag"),
    ("full", False, "complete"),
    ("soft", False, "complete"),
    ("full", True, "complete"),
    ("soft", True, "complete"),
]


def _grads(net, rule, batch):
    res, _ = sequence_grads(net, rule, *batch)
    return res.grads


@pytest.mark.parametrize(("reset", "recurrent", "traces"), CASES)
def test_ostl_equals_numpy_bptt(rng, reset, recurrent, traces) -> None:
    net = tiny_net(rng, reset=reset, recurrent=recurrent)
    batch = tiny_batch(rng)
    ref = _grads(net, RuleConfig("bptt"), batch)
    got = _grads(net, RuleConfig("ostl", traces=traces), batch)
    assert set(ref) == set(got)
    expected = {"h0.W", "h0.b", "h0.d", "out.W", "out.c"} | ({"h0.H"} if recurrent else set())
    assert set(ref) == expected
    for name in ref:
        assert np.abs(ref[name]).max() > 1e-3, f"{name}: gradient vanishes, test is vacuous"
        assert rel_err(got[name], ref[name]) < TOL, name


@pytest.mark.parametrize("reset", ["full", "soft"])
def test_without_h_traces_exact_for_diagonal_h_only(rng, reset) -> None:
    """'Without H' drops only J's off-diagonal: exact for diagonal H, not for a full H."""
    batch = tiny_batch(rng, T=12)
    net = tiny_net(rng, reset=reset, recurrent=True, diag_h=True)
    ref = _grads(net, RuleConfig("bptt"), batch)
    got = _grads(net, RuleConfig("ostl", traces="diag"), batch)
    for name in ref:
        assert rel_err(got[name], ref[name]) < TOL, name
    full = tiny_net(rng, reset=reset, recurrent=True)
    ref = _grads(full, RuleConfig("bptt"), batch)
    got = _grads(full, RuleConfig("ostl", traces="diag"), batch)
    assert rel_err(got["h0.W"], ref["h0.W"]) > 1e-3
    assert rel_err(got["h0.H"], ref["h0.H"]) > 1e-3


@pytest.mark.parametrize("tau", [0.0, 0.7])
def test_readout_trace_exact_with_leak(rng, tau) -> None:
    net = tiny_net(rng, tau=tau, loss="ce_over_time")
    x, _, mask = tiny_batch(rng)
    labels = np.eye(2)[rng.integers(0, 2, size=x.shape[1])]
    target = np.broadcast_to(labels, (x.shape[0], *labels.shape)).copy()
    ref = _grads(net, RuleConfig("bptt"), (x, target, mask))
    got = _grads(net, RuleConfig("ostl"), (x, target, mask))
    for name in ("out.W", "out.c"):
        assert rel_err(got[name], ref[name]) < TOL
    if tau == 0.0:
        assert rel_err(got["h0.W"], ref["h0.W"]) < TOL


# ---------------------------------------------------------------- torch autograd reference


def _torch_grads(net, batch, reduction="sequence_mean"):
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v > 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            return grad * (1.0 - torch.tanh(v) ** 2)

    layer = net.hidden[0]
    T64 = torch.float64
    W = torch.tensor(np.array(layer.W.value()), dtype=T64, requires_grad=True)
    b = torch.tensor(np.array(layer.b.value()), dtype=T64, requires_grad=True)
    d = torch.tensor(np.array(layer.d.value()), dtype=T64, requires_grad=True)
    H = None
    if layer.H is not None:
        H = torch.tensor(np.array(layer.H.value()), dtype=T64, requires_grad=True)
    Wo = torch.tensor(np.array(net.readout.W.value()), dtype=T64, requires_grad=True)
    c = torch.tensor(np.array(net.readout.c.value()), dtype=T64, requires_grad=True)
    x, target, mask = (torch.tensor(a, dtype=T64) for a in batch)
    T, B, _ = x.shape
    n = W.shape[1]
    s = torch.zeros(B, n, dtype=T64)
    y = torch.zeros(B, n, dtype=T64)
    w = mask / B if reduction == "sequence_mean" else mask / mask.sum()
    loss = torch.zeros((), dtype=T64)
    for t in range(T):
        i = x[t] @ W + (y @ H if H is not None else 0.0)
        if layer.cfg.reset == "full":
            s = i + d * s * (1.0 - y)
        else:
            s = i + d * s - y * b
        y = Spike.apply(s - b)
        o = y @ Wo + c
        bce = torch.nn.functional.binary_cross_entropy_with_logits(o, target[t], reduction="none")
        loss = loss + (w[t] * bce.sum(-1)).sum()
    loss.backward()
    out = {"h0.W": W, "h0.b": b, "h0.d": d, "out.W": Wo, "out.c": c}
    if H is not None:
        out["h0.H"] = H
    return float(loss.detach()), {k: v.grad.numpy() for k, v in out.items()}


@pytest.mark.parametrize(("reset", "recurrent", "traces"), CASES)
def test_ostl_and_bptt_equal_torch_autograd(rng, reset, recurrent, traces) -> None:
    net = tiny_net(rng, reset=reset, recurrent=recurrent)
    batch = tiny_batch(rng)
    loss_ref, ref = _torch_grads(net, batch)
    for rule in (RuleConfig("bptt"), RuleConfig("ostl", traces=traces)):
        res, _ = sequence_grads(net, rule, *batch)
        assert res.loss == pytest.approx(loss_ref, rel=1e-12)
        assert set(res.grads) == set(ref)
        for name in ref:
            assert np.abs(ref[name]).max() > 1e-3
            assert rel_err(res.grads[name], ref[name]) < TOL, (rule.name, name)


@pytest.mark.parametrize("reset", ["full", "soft"])
def test_detached_reset_changes_gradient_but_ostl_still_equals_bptt(rng, reset) -> None:
    import dataclasses

    net = tiny_net(rng, reset=reset, recurrent=True)
    batch = tiny_batch(rng)
    exact = _grads(net, RuleConfig("bptt"), batch)
    for layer in net.hidden:
        layer.cfg = dataclasses.replace(layer.cfg, detach_reset=True)
    ref = _grads(net, RuleConfig("bptt"), batch)
    got = _grads(net, RuleConfig("ostl", traces="complete"), batch)
    assert rel_err(ref["h0.W"], exact["h0.W"]) > 1e-3
    for name in ref:
        assert rel_err(got[name], ref[name]) < TOL, name
