"""Rule properties: locality of OSTTP, per-step vs per-sequence modes, multi-layer support."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.learning import (
    RULES,
    OnlineLearner,
    OptimConfig,
    Optimizer,
    RuleConfig,
    frame_weights,
    sequence_grads,
)
from tests.learning.helpers import rel_err, tiny_batch, tiny_net


@pytest.mark.parametrize("rule", ["osttp", "drtp"])
def test_osttp_hidden_updates_do_not_depend_on_output_weights(rng, rule) -> None:
    net = tiny_net(rng, widths=(3, 5, 4), recurrent=True)
    batch = tiny_batch(rng)
    res1, _ = sequence_grads(net, RuleConfig(rule), *batch)
    net.readout.W.update(rng.normal(0, 3.0, size=net.readout.W.shape))
    net.readout.c.update(np.ones(net.readout.c.shape))
    res2, _ = sequence_grads(net, RuleConfig(rule), *batch)
    hidden = [k for k in res1.grads if k.startswith("h")]
    assert len(hidden) == 8
    for k in hidden:
        np.testing.assert_array_equal(res1.grads[k], res2.grads[k])
    assert not np.allclose(res1.grads["out.W"], res2.grads["out.W"])
    # ...whereas OSTL's hidden updates do depend on them (weight transport)
    ostl1, _ = sequence_grads(net, RuleConfig("ostl"), *batch)
    net.readout.W.update(rng.normal(0, 3.0, size=net.readout.W.shape))
    ostl2, _ = sequence_grads(net, RuleConfig("ostl"), *batch)
    assert not np.allclose(ostl1.grads["h1.W"], ostl2.grads["h1.W"])


@pytest.mark.parametrize(
    ("rule", "traces"),
    [(r, "diag") for r in ("ostl", "ostl_rnd", "drtp", "osttp")]
    + [(r, "complete") for r in ("ostl", "ostl_rnd", "osttp")],
)
def test_online_steps_sum_to_sequence_grads(rng, rule, traces) -> None:
    """With weights held fixed, the per-step gradients sum to the per-sequence gradient."""
    net = tiny_net(rng, widths=(3, 4, 3), recurrent=True, tau=0.5)
    x, target, mask = tiny_batch(rng)
    cfg = RuleConfig(rule, traces=traces)
    ref, _ = sequence_grads(net, cfg, x, target, mask)
    learner = OnlineLearner(net, cfg)
    state = learner.init_state(x.shape[1])
    w = frame_weights(mask, cfg.reduction)
    total: dict[str, np.ndarray] = {}
    loss = 0.0
    for t in range(x.shape[0]):
        res, state = learner.step(x[t], target[t], w[t], state)
        loss += res.loss
        for k, v in res.grads.items():
            total[k] = total.get(k, 0.0) + v
    assert loss == pytest.approx(ref.loss, rel=1e-12)
    assert set(total) == set(ref.grads)
    for k in ref.grads:
        assert rel_err(total[k], ref.grads[k]) < 1e-10, k


def test_per_step_and_per_sequence_updates_agree_as_lr_vanishes(rng) -> None:
    base = tiny_net(rng, recurrent=True)
    x, target, mask = tiny_batch(rng, T=10)
    cfg = RuleConfig("osttp")
    w = frame_weights(mask, cfg.reduction)

    def weights(net):
        return {k: np.array(p.value()) for k, p in net.parameters().items()}

    errs = []
    for lr in (1e-2, 1e-3, 1e-4, 1e-5):
        seq = copy.deepcopy(base)
        res, _ = sequence_grads(seq, cfg, x, target, mask)
        Optimizer(seq.parameters(), OptimConfig("sgd", lr=lr)).step(res.grads)
        onl = copy.deepcopy(base)
        opt = Optimizer(onl.parameters(), OptimConfig("sgd", lr=lr))
        learner = OnlineLearner(onl, cfg)
        state = learner.init_state(x.shape[1])
        for t in range(x.shape[0]):
            r, state = learner.step(x[t], target[t], w[t], state)
            opt.step(r.grads)
        w0, ws, wo = weights(base), weights(seq), weights(onl)
        errs.append(max(rel_err(wo[k] - w0[k], ws[k] - w0[k]) for k in w0))
    # first-order agreement: the mismatch shrinks linearly with lr
    assert errs[3] < 2e-4, errs
    assert errs[3] < errs[2] < errs[1] < errs[0], errs


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_trains_a_three_layer_network(rng, rule) -> None:
    net = tiny_net(rng, widths=(3, 6, 5, 4), recurrent=True, dtype=np.float32)
    res, traj = sequence_grads(net, RuleConfig(rule), *tiny_batch(rng))
    params = net.parameters()
    assert set(res.grads) == set(params)
    for k, g in res.grads.items():
        assert g.shape == params[k].value().shape
        assert np.all(np.isfinite(g))
    assert [r.y.shape for r in traj.layers] == [(9, 3, 6), (9, 3, 5), (9, 3, 4)]


def test_bptt_is_not_online(rng) -> None:
    with pytest.raises(ConfigError, match="not an online rule"):
        OnlineLearner(tiny_net(rng), RuleConfig("bptt"))
    with pytest.raises(ConfigError, match="unknown learning rule"):
        RuleConfig("backprop")  # type: ignore[arg-type]


def test_feedback_matrix_is_fixed_and_he_uniform(rng) -> None:
    net = tiny_net(rng, widths=(3, 600), n_out=50)
    B = net.feedback[0]
    assert B.shape == (50, 600)
    lim = np.sqrt(6.0 / 600)
    v = B.value()
    assert np.abs(v).max() <= lim and np.abs(v).max() > 0.95 * lim
    assert abs(v.mean()) < 0.05 * lim
    with pytest.raises(ConfigError, match="fixed"):
        B.update(np.zeros(B.shape))


def test_masked_frames_do_not_contribute(rng) -> None:
    net = tiny_net(rng, recurrent=True)
    x, target, mask = tiny_batch(rng)
    flipped = target.copy()
    flipped[mask == 0] = 1.0 - flipped[mask == 0]
    for rule in RULES:
        a, _ = sequence_grads(net, RuleConfig(rule), x, target, mask)
        b, _ = sequence_grads(net, RuleConfig(rule), x, flipped, mask)
        for k in a.grads:
            np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-15)


def test_h_scale_sets_recurrent_init(rng) -> None:
    from hil.learning import ReadoutConfig, SNUConfig, build_network

    cfg = [SNUConfig(10, 40)]
    full = build_network(cfg, ReadoutConfig(40, 3), np.random.default_rng(1))
    small = build_network(cfg, ReadoutConfig(40, 3), np.random.default_rng(1), h_scale=0.1)
    zero = build_network(cfg, ReadoutConfig(40, 3), np.random.default_rng(1), h_scale=0.0)
    h_full, h_small = full.hidden[0].H.value(), small.hidden[0].H.value()
    np.testing.assert_allclose(h_small, 0.1 * h_full, rtol=1e-6)
    assert np.all(np.diagonal(h_full) == 0) and np.abs(h_full).max() <= np.sqrt(6 / 80)
    assert not np.any(zero.hidden[0].H.value())
    np.testing.assert_array_equal(full.hidden[0].W.value(), small.hidden[0].W.value())
