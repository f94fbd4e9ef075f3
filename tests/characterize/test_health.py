"""``hil health``: stuck/dead cells and rows found through the driver contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import simulator
from drivers import InvalidRequest
from drivers.remote import RemoteDriver
from drivers.sim import SimDriver
from hil.characterize.health import HealthReport, scan
from hil.cli import main
from protocols.region import Region
from tests.drivers.serve_proc import ServeProcess


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
    out = capsys.readouterr()
    report = HealthReport.model_validate_json(out.out)
    assert "forgets it when this command ends" in out.err  # and says how to use the file
    assert f"device.health={tmp_path / 'latest.json'}" in out.err
    assert [c.chip for c in report.chips] == [1] and report.chips[0].devices == 32 * 64 * 4
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert HealthReport.model_validate(latest) == report
    assert main(["health", "sim://", "--chip", "7", "--out", str(tmp_path)]) != 0
    assert "--chip 7: the device has chips 0..1" in capsys.readouterr().err


def test_the_contract_keeps_wear_and_the_health_report_in_process(tmp_path: Path, capsys) -> None:
    region = Region(0, 4, 8, 2, 5)
    counts = (np.arange(4 * 3 * 4).reshape(4, 3, 4) % 4).astype(np.int32)
    mask = np.zeros((4, 3, 4), bool)
    mask[0, 0, 2] = True
    url = f"sim://?preset=hermes&seed=1&state_dir={tmp_path / 'state'}"
    with SimDriver("hermes", seed=1, state_dir=tmp_path / "state") as drv:
        drv.apply_pulses(region, counts, mask, request_id="p1")
        drv.apply_pulses(region, counts, mask, request_id="p1")  # a retry: counted once
        drv.reset(Region(1, 0, 2, 0, 2), request_id="r1")
        set_p, resets = drv.wear(Region(0, 0, 16, 0, 16))  # type: ignore[misc]
        assert set_p[4:8, 2:5].tolist() == counts.tolist() and set_p.sum() == counts.sum()
        assert resets.sum() == 1 and resets[4, 2, 2] == 1
        assert drv.health_report() is None
        with pytest.raises(InvalidRequest, match="kind 'pcm-hil-health'"):
            drv.keep_health_report({"kind": "other"})
    with SimDriver("hermes", seed=1, state_dir=tmp_path / "state") as drv:  # reopened
        set_p, resets = drv.wear(Region(0, 0, 256, 0, 256))  # type: ignore[misc]
        assert set_p.sum() == counts.sum() and resets.sum() == 1
        assert drv.wear(Region(1, 0, 2, 0, 2))[1].tolist() == np.ones((2, 2, 4)).tolist()  # type: ignore[index]
    assert main(["--log-level", "warning", "health", url, "--chip", "0", "--region", "0:16,0:16",
                 "--pulses", "5", "--out", str(tmp_path / "h")]) == 0  # fmt: skip
    assert "the device keeps it for placement" in capsys.readouterr().err  # in its state dir
    with SimDriver("hermes", seed=1, state_dir=tmp_path / "state") as drv:
        kept = HealthReport.model_validate(drv.health_report())
        w0 = kept.wear[0]  # type: ignore[index]
        # the scan: 5 SET pulses and 2 RESETs per device of its 16x16 cells, after ours
        assert w0.set_pulses == counts.sum() + 5 * 16 * 16 * 4
        assert w0.resets == 1 + 2 * 16 * 16 * 4
        assert [c.chip for c in kept.chips] == [0]
    with SimDriver("hermes", seed=1) as plain:  # no state dir: kept in memory while open
        assert plain.wear(region)[0].sum() == 0  # type: ignore[index]
        plain.keep_health_report(kept.model_dump(mode="json"))
        assert HealthReport.model_validate(plain.health_report()) == kept


def test_wear_in_hil_health_is_exact_and_survives_a_server_restart(tmp_path: Path, capsys) -> None:
    region = Region(0, 10, 18, 20, 26)
    counts = (np.arange(8 * 6 * 4).reshape(8, 6, 4) % 5).astype(np.int32)
    mask = np.zeros((8, 6, 4), bool)
    mask[1, 2, 3] = True
    args = (
        "sim://?preset=hermes&seed=1",
        f"ipc://{tmp_path}/dev.sock",
        ["--state-dir", str(tmp_path / "state")],
    )
    with ServeProcess(*args, log_path=tmp_path / "serve.log") as server:
        with RemoteDriver(server.endpoint) as remote:
            remote.apply_pulses(region, counts, mask, request_id="p1")
            remote.apply_pulses(region, counts, mask, request_id="p1")  # a retry: counted once
            remote.reset(Region(1, 0, 2, 0, 3), request_id="r1")
    with ServeProcess(*args, log_path=tmp_path / "serve.log") as server:  # restarted
        capsys.readouterr()
        assert (
            main(["--log-level", "warning", "health", server.endpoint, "--wear-only", "--json"])
            == 0
        )
        only = HealthReport.model_validate_json(capsys.readouterr().out)
        assert only.chips == [] and only.wear is not None
        w0, w1 = only.wear
        assert (w0.set_pulses, w0.resets, w0.max_set_pulses) == (int(counts.sum()), 1, 4)
        assert w0.devices_pulsed == int((counts > 0).sum())
        top = w0.most_worn_devices[0]  # the first device with 4 pulses, row-major
        assert (top.row, top.col, top.device, top.set_pulses) == (10, 21, "A+", 4)
        assert [t.region for t in w0.most_worn_tiles] == [Region(0, 0, 32, 0, 32)]
        assert (w1.set_pulses, w1.resets) == (0, 2 * 3 * 4)
        with RemoteDriver(server.endpoint) as remote:
            assert remote.health_report() is None
        out = tmp_path / "h"
        assert main(["--log-level", "warning", "health", server.endpoint, "--chip", "0",
                     "--region", "0:32,0:32", "--json", "--out", str(out)]) == 0  # fmt: skip
        scanned = HealthReport.model_validate_json(capsys.readouterr().out)
        assert scanned.wear is not None and [w.chip for w in scanned.wear] == [0]
        assert scanned.wear[0].set_pulses == counts.sum() + 8 * 32 * 32 * 4
        assert scanned.wear[0].resets == 1 + 2 * 32 * 32 * 4
        main(["--log-level", "warning", "health", server.endpoint, "--wear-only"])
        text = capsys.readouterr().out
        assert f"chip 0 wear: {counts.sum() + 8 * 32 * 32 * 4} SET pulses" in text
        assert "chip 1 wear: 0 SET pulses, 24 RESETs" in text
    with ServeProcess(*args, log_path=tmp_path / "serve.log") as server:  # the server kept it
        with RemoteDriver(server.endpoint) as remote:
            assert HealthReport.model_validate(remote.health_report()) == scanned
            with pytest.raises(InvalidRequest, match="kind 'pcm-hil-health'"):
                remote.keep_health_report({"kind": "nope"})


def test_json_shape_of_the_report() -> None:
    drv = SimDriver("hermes", seed=5)
    drv.apply_pulses(Region(1, 0, 1, 0, 1), np.full((1, 1, 4), 3, np.int32))
    report = scan(drv, "sim://", [Region(1, 0, 8, 0, 16)], pulses=4)
    data = json.loads(report.model_dump_json())
    assert set(data) == {"kind", "version", "created", "device", "driver", "preset",
                         "row_fraction", "chips", "wear", "duration_s"}  # fmt: skip
    assert (data["kind"], data["version"], data["driver"], data["preset"]) == (
        "pcm-hil-health", 2, "sim", "hermes")  # fmt: skip
    (chip,) = data["chips"]
    assert set(chip) == {"chip", "region", "devices", "fractions", "bad_cells", "bad_rows",
                         "bad_cols", "scanned"}  # fmt: skip
    assert chip["region"] == {"chip": 1, "row0": 0, "row1": 8, "col0": 0, "col1": 16}
    assert set(chip["fractions"]) == {"stuck_reset", "stuck_gmax", "dead"}
    assert all(len(c) == 2 for c in chip["bad_cells"])
    (wear,) = data["wear"]
    assert set(wear) == {"chip", "set_pulses", "resets", "devices_pulsed", "max_set_pulses",
                         "max_resets", "mean_set_pulses", "most_worn_devices", "most_worn_tiles"}  # fmt: skip
    assert wear["set_pulses"] == 3 * 4 + 4 * 8 * 16 * 4 and wear["chip"] == 1
    assert set(wear["most_worn_devices"][0]) == {"row", "col", "device", "set_pulses", "resets"}
    assert wear["most_worn_devices"][0] == {
        "row": 0,
        "col": 0,
        "device": "A+",
        "set_pulses": 7,
        "resets": 2,
    }
    assert set(wear["most_worn_tiles"][0]) == {"region", "set_pulses", "resets"}
    assert HealthReport.model_validate(data) == report
