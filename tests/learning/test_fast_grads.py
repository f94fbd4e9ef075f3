"""The reverse-recursion form of the per-sequence gradient (hil.learning.seqgrads) against the
forward trace form and against torch autograd of the same approximation (docs/fast-gradients.md).

Autograd reference for one SNU layer: the hidden gradient of a rule with learning signal
``L_t`` is ``d/dθ Σ_t <L_t, y_t>`` with ``L_t`` held constant and the pseudo-derivative in
the spike's backward pass. The trace kinds become detach patterns of the forward pass:

- ``complete``: nothing detached (exact; for OSTL this is BPTT);
- ``diag`` with H: ``y_{t−1}`` reaches ``s_t`` through ``H`` detached, except through the
  diagonal ``H_jj`` (the "without H" traces keep ``J``'s diagonal only);
- instantaneous (DRTP): ``s_{t−1}`` is detached, ``y_{t−1}`` only keeps its direct
  dependence on ``b``.
"""

from __future__ import annotations

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.learning import RuleConfig, sequence_grads
from tests.conftest import NEEDS_REFERENCE
from tests.learning.helpers import rel_err, tiny_batch, tiny_net

TOL = 1e-6
HIDDEN_RULES = ("ostl", "ostl_rnd", "drtp", "osttp")


@pytest.mark.parametrize("rule", HIDDEN_RULES)
@pytest.mark.parametrize("traces", ["diag", "complete"])
@pytest.mark.parametrize("reset", ["full", "soft"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_reverse_form_equals_trace_form(rng, rule, traces, reset, recurrent) -> None:
    net = tiny_net(rng, widths=(3, 5, 4), reset=reset, recurrent=recurrent, tau=0.5)
    batch = tiny_batch(rng, T=11)
    cfg = RuleConfig(rule, traces=traces)
    fast, traj_f = sequence_grads(net, cfg, *batch)
    slow, traj_s = sequence_grads(net, cfg, *batch, form="traces")
    assert fast.loss == slow.loss
    np.testing.assert_array_equal(traj_f.o, traj_s.o)
    assert set(fast.grads) == set(slow.grads) == set(net.parameters())
    for k in slow.grads:
        assert np.abs(slow.grads[k]).max() > 1e-3, f"{k}: vanishing gradient, vacuous test"
        assert rel_err(fast.grads[k], slow.grads[k]) < 1e-12, k


def test_unknown_form_is_refused(rng) -> None:
    with pytest.raises(ConfigError, match="gradient form"):
        sequence_grads(tiny_net(rng), RuleConfig("osttp"), *tiny_batch(rng), form="fast")  # type: ignore[arg-type]


def _torch_reference(net, rule: str, traces: str, batch) -> dict[str, np.ndarray]:
    """Gradients of the hidden layer and readout by torch autograd (module doc)."""
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    T64 = torch.float64

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v > 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            return grad * (1.0 - torch.tanh(v) ** 2)

    def leaf(a):
        return torch.tensor(np.array(a), dtype=T64, requires_grad=True)

    layer = net.hidden[0]
    W, b, d = leaf(layer.W.value()), leaf(layer.b.value()), leaf(layer.d.value())
    H = None if layer.H is None else leaf(layer.H.value())
    Wo, c = leaf(net.readout.W.value()), leaf(net.readout.c.value())
    Bf = torch.tensor(np.array(net.feedback[0].value()), dtype=T64)
    x, target, mask = (torch.tensor(a, dtype=T64) for a in batch)
    T, Bn, _ = x.shape
    w = mask / Bn  # sequence_mean
    s = torch.zeros(Bn, W.shape[1], dtype=T64)
    y = torch.zeros_like(s)
    instantaneous = rule == "drtp"
    surrogate = torch.zeros((), dtype=T64)
    loss = torch.zeros((), dtype=T64)
    for t in range(T):
        if instantaneous and t > 0:
            s_prev = s.detach()
            y_prev = Spike.apply(s_prev - b)  # value y_{t−1}; gradient only to b directly
        else:
            s_prev, y_prev = s, y
        i = x[t] @ W
        if H is not None and traces == "diag":
            yd = y_prev.detach()
            i = i + yd @ H + (y_prev - yd) * torch.diagonal(H).detach()
        elif H is not None:
            i = i + y_prev @ H
        if layer.cfg.reset == "full":
            s = i + d * s_prev * (1.0 - y_prev)
        else:
            s = i + d * s_prev - y_prev * b
        y = Spike.apply(s - b)
        o = y.detach() @ Wo + c  # readout learns from its own error; hidden from L_t
        bce = torch.nn.functional.binary_cross_entropy_with_logits(o, target[t], reduction="none")
        loss = loss + (w[t] * bce.sum(-1)).sum()
        g = (torch.sigmoid(o) - target[t]) * w[t][:, None]
        if rule == "ostl":
            L = g @ Wo.detach().T
        elif rule == "ostl_rnd":
            L = g @ Bf
        else:
            L = (target[t] * w[t][:, None]) @ Bf
        surrogate = surrogate + (L.detach() * y).sum()
    (loss + surrogate).backward()
    out = {"h0.W": W, "h0.b": b, "h0.d": d, "out.W": Wo, "out.c": c}
    if H is not None:
        out["h0.H"] = H
    return {k: v.grad.numpy() for k, v in out.items()}


@pytest.mark.parametrize("rule", HIDDEN_RULES)
@pytest.mark.parametrize("traces", ["diag", "complete"])
@pytest.mark.parametrize("reset", ["full", "soft"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_reverse_form_equals_torch_autograd(rng, rule, traces, reset, recurrent) -> None:
    net = tiny_net(rng, reset=reset, recurrent=recurrent)
    batch = tiny_batch(rng, T=10)
    ref = _torch_reference(net, rule, traces, batch)
    res, _ = sequence_grads(net, RuleConfig(rule, traces=traces), *batch)
    assert set(res.grads) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 1e-3, f"{k}: vanishing gradient, vacuous test"
        assert rel_err(res.grads[k], ref[k]) < TOL, (k, rel_err(res.grads[k], ref[k]))


@pytest.mark.parametrize("reset", ["full", "soft"])
def test_diag_traces_with_h_are_not_the_exact_gradient(rng, reset) -> None:
    """The detach patterns above are not vacuous: with a full H, diag ≠ complete."""
    net = tiny_net(rng, reset=reset, recurrent=True)
    batch = tiny_batch(rng, T=10)
    diag, _ = sequence_grads(net, RuleConfig("osttp", traces="diag"), *batch)
    full, _ = sequence_grads(net, RuleConfig("osttp", traces="complete"), *batch)
    assert rel_err(diag.grads["h0.W"], full.grads["h0.W"]) > 1e-3
