"""``hil health``: stuck/dead cells and rows found through the driver contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import simulator
from drivers.sim import SimDriver
from hil.characterize.health import HealthReport, scan
from hil.cli import main
from protocols.region import Region


def test_scan_finds_the_simulators_faulty_cells_and_a_dead_row() -> None:
    h = simulator.get_preset("hermes")
    params = h.replace(p_stuck_reset=0.01, p_stuck_gmax=0.005, p_dead=0.005)
    drv = SimDriver("hermes", seed=3)
    drv.chips = [simulator.Chip(c, params, seed=3) for c in range(2)]  # more faults, and:
    pop = drv.chips[1]._pop
    pop.arrays["fault"][17, :200, 0] = 3  # a broken word line: row 17 mostly dead
    pop.arrays["g_prog_us"][17, :200, 0] = 0.0
    pop._healthy_mask = None  # recomputed from the fault codes
    regions = [Region(0, 0, 64, 0, 256), Region(1, 0, 64, 0, 256)]
    report = scan(drv, "sim://", regions)
    for region in regions:
        truth = drv.chips[region.chip].fault_map(simulator.Region(region.chip, 0, 64, 0, 256))
        want = {(int(r), int(c)) for r, c in np.argwhere(truth.any(-1))}
        got = report.bad_cells(region.chip)
        assert len(got ^ want) <= 0.01 * len(want), (len(got - want), len(want - got))
    assert report.bad_rows(1) == {17} and report.bad_rows(0) == set()
    g = drv.read_conductances(regions[0])  # the scan leaves the region RESET
    assert np.median(g) < 0.2


def test_cli_writes_latest_report(tmp_path: Path, capsys) -> None:
    args = ["--log-level", "warning", "health", "sim://?seed=2", "--chip", "1"]
    assert main([*args, "--region", "0:32,0:64", "--json", "--out", str(tmp_path)]) == 0
    report = HealthReport.model_validate_json(capsys.readouterr().out)
    assert [c.chip for c in report.chips] == [1] and report.chips[0].devices == 32 * 64 * 4
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert HealthReport.model_validate(latest) == report
    assert main(["health", "sim://", "--chip", "7", "--out", str(tmp_path)]) != 0
    assert "--chip 7: the device has chips 0..1" in capsys.readouterr().err
