"""hil.trainer.cells (the trainer's cell arithmetic): CellMapping, Boybat arbitration, refresh planning."""

from __future__ import annotations

import numpy as np
import pytest

from hil.trainer.cells import (
    CellMapping,
    InputRangeError,
    RefreshConfig,
    ShapeError,
    arbitrate,
    plan_refresh,
)
from protocols.cell import net_conductance


def test_cell_mapping_scale_and_inverse() -> None:
    m = CellMapping.for_weights(np.array([[0.5, -2.0]]), g_net_max_us=10.0)
    assert m.scale == pytest.approx(5.0)
    np.testing.assert_allclose(m.to_conductance([[1.0, -2.0, 3.0]]), [[5.0, -10.0, 10.0]])
    np.testing.assert_allclose(m.to_weight(np.array([5.0, -10.0])), [1.0, -2.0])
    q = CellMapping(1.0, 10.0, levels=4)
    assert q.step == 0.25
    np.testing.assert_allclose(q.quantize([0.3, -0.62, 0.1]), [0.25, -0.5, 0.0])
    with pytest.raises(InputRangeError, match="w_max"):
        CellMapping(0.0, 10.0)
    with pytest.raises(InputRangeError, match="headroom"):
        CellMapping.for_weights(np.ones(2), 10.0, headroom=0.5)


def test_arbitration_round_robin() -> None:
    n = np.array([[3, -2], [0, 1]])
    c0, k = arbitrate(n, 0)
    assert k == 1
    assert c0[0, 0].tolist() == [3, 0, 0, 0] and c0[0, 1].tolist() == [0, 0, 2, 0]
    c1, k = arbitrate(n, k)
    assert k == 2
    assert c1[0, 0].tolist() == [0, 3, 0, 0] and c1[0, 1].tolist() == [0, 0, 0, 2]
    with pytest.raises(ShapeError, match="integer"):
        arbitrate(np.ones((2, 2)), 0)
    with pytest.raises(InputRangeError):
        arbitrate(n, -1)


def test_refresh_plan_thresholds() -> None:
    g_max = 10.0  # side maximum 20 µS: hi 15, lo 5
    g = np.zeros((1, 4, 4))
    g[0, 0] = [8, 8, 3, 3]  # 16 / 6 -> refresh
    g[0, 1] = [8, 8, 2, 2]  # 16 / 4 -> smaller side too low
    g[0, 2] = [7, 7, 5, 5]  # 14 / 10 -> larger side too low
    g[0, 3] = [3, 3, 8, 8.5]  # minus side high -> refresh
    assert plan_refresh(g, g_max).tolist() == [[True, False, False, True]]
    assert plan_refresh(g, g_max, RefreshConfig(hi=0.9, lo=0.1)).tolist() == [[False] * 4]
    with pytest.raises(InputRangeError):
        RefreshConfig(hi=0.2, lo=0.5)
    with pytest.raises(ShapeError):
        plan_refresh(np.zeros((2, 3)), g_max)


def test_net_conductance_device_order() -> None:
    assert net_conductance(np.array([4.0, 2.0, 1.0, 1.0])) == 2.0
    with pytest.raises(ValueError, match="4 devices"):
        net_conductance(np.zeros((2, 3)))
