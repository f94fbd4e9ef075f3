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


def test_placement_avoids_the_health_reports_bad_lines_and_prefers_clean_cells() -> None:
    from drivers.allocation import Defects

    shapes = matrix_shapes(load_config(None))
    clean = place(shapes, chips=2, rows=256, cols=256)
    bad = {
        0: Defects(rows=frozenset({5}), cols=frozenset({100})),
        1: Defects(cells=frozenset({(0, 0), (10, 10)})),
    }
    regions = place(shapes, chips=2, rows=256, cols=256, defects=bad)
    assert regions.keys() == clean.keys()
    for name, r in regions.items():
        assert r.shape == shapes[name] and r.chip == clean[name].chip
        if r.chip == 0:
            assert not r.row0 <= 5 < r.row1 and not r.col0 <= 100 < r.col1, (name, r)
    assert not regions["h0.W"].overlaps(regions["out.W"])
    assert bad[1].cells_in(regions["B0"]) == []  # a clean 88x150 window exists on chip 1
    with pytest.raises(PlacementError, match="avoiding 1 bad rows and 0 bad columns"):
        place(shapes, chips=2, rows=256, cols=256, defects={0: Defects(rows=frozenset({128}))})
