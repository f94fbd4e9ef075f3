"""One training epoch over time-major batches, in either update mode.

:func:`train_step` is the one training step every trainer calls (the run trainer of
:mod:`hil.trainer` and :func:`train_epoch` here).

- ``mode="sequence"`` (the paper's form): per batch, :func:`~hil.learning.rules.sequence_grads`
  then one optimiser step, ``Δθ = −η·Σ_t L_t·e_t``.
- ``mode="step"`` (fully online): per time step, :class:`~hil.learning.rules.OnlineLearner`
  gives ``L_t·e_t`` and the optimiser applies it immediately.

Batches are ``(x (T, B, m), target (T, B, k), mask (T, B))`` triples (e.g.
:class:`hil.tasks.jsb.JsbBatch`). The function never reads the clock or files.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

import numpy as np

from hil.errors import ConfigError
from hil.learning.network import Network
from hil.learning.optim import Optimizer
from hil.learning.readout import frame_weights
from hil.learning.rules import OnlineLearner, RuleConfig, sequence_grads

UpdateMode = Literal["sequence", "step"]


class StepOutcome(NamedTuple):
    """What one training step did: readout outputs ``o`` (T, B, k) and the weighted loss
    scaled to a sum over the batch's frames."""

    o: np.ndarray
    loss_sum: float


def train_step(
    net: Network,
    rule: RuleConfig,
    opt: Optimizer,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray],
    mode: UpdateMode = "sequence",
) -> StepOutcome:
    """Train on one time-major batch ``(x, target, mask)``: THE training step.

    ``sequence``: ``∇θ = Σ_t L_t·e_t`` over the batch, then one optimiser step. ``step``:
    one optimiser step after every time step (each on the weights the previous one left).
    Every trainer of this project (``hil train``, ``hil demo``, the reproduction, the
    sweeps) runs its batches through this function.
    """
    x, target, mask = batch
    w = frame_weights(mask, rule.reduction)
    scale = float(mask.sum()) / max(float(w.sum()), 1e-300)  # weighted loss → frame sum
    if mode == "sequence":
        res, traj = sequence_grads(net, rule, x, target, mask)
        opt.step(res.grads)
        return StepOutcome(traj.o, res.loss * scale)
    if mode != "step":
        raise ConfigError(f"update mode must be 'sequence' or 'step', got {mode!r}")
    learner = OnlineLearner(net, rule)
    state = learner.init_state(x.shape[1])
    o = np.empty_like(target)
    loss_sum = 0.0
    for t in range(x.shape[0]):
        res, state = learner.step(x[t], target[t], w[t], state)
        opt.step(res.grads)
        o[t] = state.o
        loss_sum += res.loss * scale
    return StepOutcome(o, loss_sum)


def train_epoch(
    net: Network,
    rule: RuleConfig,
    opt: Optimizer,
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    mode: UpdateMode = "sequence",
) -> float:
    """Train over ``batches`` with :func:`train_step`; returns the mean training loss per
    frame (weighted sum / frames)."""
    if mode not in ("sequence", "step"):
        raise ConfigError(f"update mode must be 'sequence' or 'step', got {mode!r}")
    loss_sum, frames = 0.0, 0.0
    for batch in batches:
        loss_sum += train_step(net, rule, opt, batch, mode).loss_sum
        frames += float(batch[2].sum())
    return loss_sum / max(frames, 1.0)
