"""SNU networks, learning rules (BPTT, OSTL, OSTL-rnd, temporal DRTP, OSTTP) and optimisers.

Public API (see each module's docstring for the equations):

- :class:`SNUConfig`, :class:`ReadoutConfig`, :func:`build_network` → :class:`Network`
- :class:`MatrixOp` (interface), :class:`DenseMatrix`, :class:`HostVector`
- :class:`RuleConfig`, :func:`sequence_grads` (per-sequence), :class:`OnlineLearner` (per-step)
- :class:`OptimConfig`, :class:`Optimizer`
- :class:`PseudoDerivative`, :data:`TANH`, :data:`FAST_SIGMOID_100`
"""

from hil.learning.fit import StepOutcome, UpdateMode, train_epoch, train_step
from hil.learning.matrix import DenseMatrix, HostVector, MatrixOp
from hil.learning.network import (
    LayerRecord,
    MatrixFactory,
    Network,
    Readout,
    SNULayer,
    Trajectory,
    build_network,
    dense_factory,
)
from hil.learning.optim import NonFiniteGradientError, OptimConfig, Optimizer, clip_grads
from hil.learning.pseudo import FAST_SIGMOID_100, TANH, PseudoDerivative, heaviside
from hil.learning.readout import ReadoutConfig, frame_weights, loss_terms
from hil.learning.rules import (
    RULES,
    OnlineLearner,
    OnlineState,
    RuleConfig,
    StepResult,
    hidden_signals,
    sequence_grads,
)
from hil.learning.snu import SNUConfig, SNUParams, SNUState, initial_state, partials, snu_step

__all__ = [
    "FAST_SIGMOID_100",
    "RULES",
    "TANH",
    "DenseMatrix",
    "HostVector",
    "LayerRecord",
    "MatrixFactory",
    "MatrixOp",
    "Network",
    "NonFiniteGradientError",
    "OnlineLearner",
    "OnlineState",
    "OptimConfig",
    "Optimizer",
    "PseudoDerivative",
    "Readout",
    "ReadoutConfig",
    "RuleConfig",
    "SNUConfig",
    "SNULayer",
    "SNUParams",
    "SNUState",
    "StepResult",
    "Trajectory",
    "build_network",
    "clip_grads",
    "dense_factory",
    "frame_weights",
    "heaviside",
    "hidden_signals",
    "initial_state",
    "loss_terms",
    "partials",
    "sequence_grads",
    "snu_step",
    "train_epoch",
    "train_step",
    "StepOutcome",
    "UpdateMode",
]
