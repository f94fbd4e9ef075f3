"""One training epoch over time-major batches, in either update mode.

- ``mode="sequence"`` (the paper's form): per batch, :func:`~hil.learning.rules.sequence_grads`
  then one optimiser step, ``Δθ = −η·Σ_t L_t·e_t``.
- ``mode="step"`` (fully online): per time step, :class:`~hil.learning.rules.OnlineLearner`
  gives ``L_t·e_t`` and the optimiser applies it immediately.

Batches are ``(x (T, B, m), target (T, B, k), mask (T, B))`` triples (e.g.
:class:`hil.tasks.jsb.JsbBatch`). The function never reads the clock or files.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

from hil.errors import ConfigError
from hil.learning.network import Network
from hil.learning.optim import Optimizer
from hil.learning.readout import frame_weights
from hil.learning.rules import OnlineLearner, RuleConfig, sequence_grads

UpdateMode = Literal["sequence", "step"]


def train_epoch(
    net: Network,
    rule: RuleConfig,
    opt: Optimizer,
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    mode: UpdateMode = "sequence",
) -> float:
    """Train over ``batches``; returns the mean training loss per frame (weighted sum / frames)."""
    if mode not in ("sequence", "step"):
        raise ConfigError(f"update mode must be 'sequence' or 'step', got {mode!r}")
    loss_sum, frames = 0.0, 0.0
    for x, target, mask in batches:
        w = frame_weights(mask, rule.reduction)
        scale = float(mask.sum()) / max(float(w.sum()), 1e-300)  # weighted loss → frame sum
        if mode == "sequence":
            res, _ = sequence_grads(net, rule, x, target, mask)
            opt.step(res.grads)
            loss_sum += res.loss * scale
        else:
            learner = OnlineLearner(net, rule)
            state = learner.init_state(x.shape[1])
            for t in range(x.shape[0]):
                res, state = learner.step(x[t], target[t], w[t], state)
                opt.step(res.grads)
                loss_sum += res.loss * scale
        frames += float(mask.sum())
    return loss_sum / max(frames, 1.0)
