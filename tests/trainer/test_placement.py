from __future__ import annotations

import pytest

from hil.trainer.config import load_config
from hil.trainer.model import matrix_shapes
from hil.trainer.placement import PlacementError, place


def test_paper_network_goes_where_the_paper_put_it() -> None:
    shapes = matrix_shapes(load_config(None))
    assert shapes == {"h0.W": (88, 150), "B0": (88, 150), "out.W": (150, 88)}
    regions = place(shapes, chips=2, rows=256, cols=256)
    assert regions["h0.W"].chip == 0 and regions["out.W"].chip == 0 and regions["B0"].chip == 1
    assert not regions["h0.W"].overlaps(regions["out.W"])
    for name, r in regions.items():
        assert r.shape == shapes[name]


def test_recurrent_and_two_layer_networks_fit_without_overlap() -> None:
    shapes = matrix_shapes(load_config(None, ["network.hidden=[64, 64]", "network.recurrent=true"]))
    regions = place(shapes, chips=2, rows=256, cols=256)
    names = list(regions)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if regions[a].chip == regions[b].chip:
                assert not regions[a].overlaps(regions[b]), (a, b)


def test_a_network_that_does_not_fit_names_the_matrix() -> None:
    shapes = matrix_shapes(load_config(None, ["network.hidden=[300]"]))
    with pytest.raises(PlacementError, match=r"h0\.W.*88x300|out\.W.*300x88"):
        place(shapes, chips=2, rows=256, cols=256)
    shapes = matrix_shapes(load_config(None, ["network.hidden=[200]"]))
    with pytest.raises(PlacementError, match="does not fit on chip 0"):
        place(shapes, chips=2, rows=256, cols=256)
    with pytest.raises(PlacementError, match="only 1 chip"):
        place(matrix_shapes(load_config(None)), chips=1, rows=256, cols=256)
