"""train_epoch in both update modes lowers the loss of a tiny learnable task for every rule."""

from __future__ import annotations

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.learning import (
    RULES,
    OptimConfig,
    Optimizer,
    ReadoutConfig,
    RuleConfig,
    SNUConfig,
    build_network,
    train_epoch,
)


def _task(rng: np.random.Generator, n: int = 8, T: int = 12):
    """Predict the previous input frame (needs memory of one step)."""
    x = (rng.random((T, n, 4)) < 0.3).astype(np.float32)
    target = np.zeros_like(x)
    target[1:] = x[:-1]
    return [(x, target, np.ones((T, n), np.float32))]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_training_lowers_loss(rng, rule, mode) -> None:
    if rule == "bptt" and mode == "step":
        with pytest.raises(ConfigError, match="not an online rule"):
            net = build_network([SNUConfig(4, 16)], ReadoutConfig(16, 4), rng)
            opt = Optimizer(net.parameters(), OptimConfig("adam", lr=1e-2))
            train_epoch(net, RuleConfig(rule), opt, _task(rng), mode)
        return
    net = build_network([SNUConfig(4, 24, decay=0.5)], ReadoutConfig(24, 4), rng)
    opt = Optimizer(net.parameters(), OptimConfig("adam", lr=2e-2 if mode == "sequence" else 2e-3))
    data = _task(rng)
    losses = [train_epoch(net, RuleConfig(rule, reduction="frame_mean"), opt, data, mode)]
    for _ in range(30):
        losses.append(train_epoch(net, RuleConfig(rule, reduction="frame_mean"), opt, data, mode))
    assert np.mean(losses[-5:]) < 0.8 * losses[0]
