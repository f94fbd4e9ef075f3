"""Pinned trajectories and OSTTP gradients of a tiny hand-set network (2 → 3 SNU → 2 sigmoid).

Steps 0 and 1 were checked by hand from learning-rules.md §1 (see comments); the rest pin
the implementation against regressions.
"""

from __future__ import annotations

import numpy as np
import pytest

from hil.learning import (
    DenseMatrix,
    HostVector,
    Network,
    Readout,
    ReadoutConfig,
    RuleConfig,
    SNUConfig,
    SNULayer,
    sequence_grads,
)


def golden_net(reset: str) -> Network:
    f64 = np.float64
    W = np.array([[0.8, -0.5, 0.3], [0.2, 0.9, -0.7]])
    H = np.array([[0.0, 0.4, -0.3], [-0.2, 0.0, 0.5], [0.3, -0.4, 0.0]])
    cfg = SNUConfig(2, 3, reset=reset, recurrent=True, decay=0.6)  # type: ignore[arg-type]
    layer = SNULayer(
        cfg,
        DenseMatrix(W, f64),
        DenseMatrix(H, f64),
        HostVector(np.array([0.5, 0.4, 0.3]), f64),
        HostVector(np.full(3, 0.6), f64),
    )
    wo = np.array([[1.0, -1.0], [0.5, 0.5], [-0.5, 1.0]])
    ro = Readout(ReadoutConfig(3, 2), DenseMatrix(wo, f64), HostVector(np.array([0.1, -0.1]), f64))
    B = DenseMatrix(np.array([[0.3, -0.6, 0.9], [-0.8, 0.2, 0.4]]), f64, trainable=False)
    return Network([layer], ro, [B])


X = np.array([[1, 0], [0.5, 0.5], [0, 1], [1, 1], [0, 0], [0.2, 0.9]], float)[:, None, :]
TARGET = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], float)[:, None, :]
MASK = np.ones((6, 1))

GOLDEN = {
    "full": {
        # t=0: s = xW = [.8,-.5,.3]; y = Θ(s−b) = [1,0,0] (0.3−0.3 is not > 0)
        # t=1: s = [.5,.2,-.2] + y0 H [0,.4,-.3] + .6·s0·(1−y0) [0,-.3,.18] = [.5,.3,-.32]
        "s": [
            [0.8, -0.5, 0.3],
            [0.5, 0.3, -0.32],
            [0.5, 1.08, -0.892],
            [1.1, 0.4, -0.4352],
            [0.0, 0.64, -0.56112],
            [0.14, 0.71, -0.406672],
        ],
        "y": [[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]],
        "loss": 7.58964422926638,
        "h0.W": [[0.16414935, -0.32304037, 2.23466434], [-1.49116048, -0.16371007, 1.9362661]],
        "h0.b": [0.87682072, 0.50908444, -2.47687467],
        "out.c": [0.96246832, -0.22943642],
    },
    "soft": {
        # t=1: s = [.5,.2,-.2] + [0,.4,-.3] + .6·s0 [.48,-.3,.18] − y0·b [.5,0,0] = [.48,.3,-.32]
        "s": [
            [0.8, -0.5, 0.3],
            [0.48, 0.3, -0.32],
            [0.488, 1.08, -0.892],
            [1.0928, 0.648, -0.4352],
            [-0.04432, 0.3888, -0.06112],
            [0.313408, 0.94328, -0.606672],
        ],
        "y": [[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]],
        "loss": 8.074652387671046,
        "h0.W": [[-0.4128888, -0.26614285, 1.70183009], [-1.60599118, -0.22688325, 1.36825722]],
        "h0.b": [1.46419088, 1.21951292, -2.0511364],
        "out.c": [0.92354948, -0.24849947],
    },
}


@pytest.mark.parametrize("reset", ["full", "soft"])
def test_pinned_trajectory_and_osttp_gradients(reset: str) -> None:
    gold = GOLDEN[reset]
    res, traj = sequence_grads(golden_net(reset), RuleConfig("osttp"), X, TARGET, MASK)
    np.testing.assert_allclose(traj.layers[0].s[:, 0], gold["s"], atol=1e-12)
    np.testing.assert_array_equal(traj.layers[0].y[:, 0], gold["y"])
    assert res.loss == pytest.approx(gold["loss"], rel=1e-12)
    for k in ("h0.W", "h0.b", "out.c"):
        np.testing.assert_allclose(res.grads[k], gold[k], atol=1e-8)
