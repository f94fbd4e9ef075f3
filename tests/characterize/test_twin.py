"""A digital twin against its source on fresh devices (issue #16 validation, sub-region).

Each source chip is characterised on a 64x256 region with one seed; the twin (the written
preset file) and the source are then measured on fresh devices (other seeds) by the same
procedure and compared: SET-curve mean per pulse within 3 %, its std within 10 %,
program-and-verify error std within 10 %, nu mean within 5 %, read noise within 10 %,
fault fractions within 20 % (relative).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers import open_driver
from hil.characterize.measure import Plan, measure
from hil.characterize.twin import THRESHOLDS, compare, statistics
from hil.cli import main
from protocols.region import Region
from simulator import get_preset
from simulator.preset_file import load_preset_file, write_preset_file

REGION = "0:64,0:256"
PLAN = Plan(Region(0, 0, 64, 0, 256))


def fresh_statistics(url: str) -> dict:
    with open_driver(url) as drv:
        return statistics(measure(drv, PLAN))


def characterize(url: str, out: Path) -> Path:
    args = ["--log-level", "warning", "characterize", url, "--region", REGION]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture
def faulty_hermes(tmp_path: Path) -> Path:
    """hermes with 10x its fault rates, so 64x256 cells hold hundreds of each fault."""
    h = get_preset("hermes")
    p = h.replace(
        name="hermes-10x-faults",
        p_stuck_reset=10 * h.p_stuck_reset,
        p_stuck_gmax=10 * h.p_stuck_gmax,
        p_dead=10 * h.p_dead,
    )
    return write_preset_file(p, tmp_path / "hermes10.yaml")


@pytest.mark.parametrize("source", ["hermes", "aihwkit-pcm"])
def test_twin_matches_source_on_fresh_devices(source: str, tmp_path: Path, request) -> None:
    spec = str(request.getfixturevalue("faulty_hermes")) if source == "hermes" else source
    twin = characterize(f"sim://?preset={spec}&seed=7", tmp_path / "twin.yaml")
    params = load_preset_file(twin)
    assert params.name == "twin"
    src = fresh_statistics(f"sim://?preset={spec}&seed=1001")
    tw = fresh_statistics(f"sim://?preset={twin}&seed=2002")
    diff = compare(src, tw)
    assert all(diff[k] <= THRESHOLDS[k] for k in THRESHOLDS), diff
    if source == "aihwkit-pcm":  # fault-free source: a fault-free twin
        assert params.p_stuck_reset == params.p_stuck_gmax == params.p_dead == 0.0
        assert params.fill_fraction == 1.0 and params.read_clamp_zero
    report = json.loads((tmp_path / "twin.json").read_text())
    assert report["n_devices"] == 64 * 256 * 4
    html = (tmp_path / "twin.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and "95 %" in html


def test_cli_refuses_bad_arguments_in_one_line(tmp_path: Path, capsys) -> None:
    cases = [
        (["--region", "0:64"], "--region '0:64': expected R0:R1,C0:C1"),
        (["--region", "0:300,0:256"], "must be non-empty within 256x256"),
        (["--region", "0:64,0:8"], "at least 16 columns"),
        (["--chip", "5"], "--chip 5: the device has chips 0..1"),
        (["--drift-hours", "0"], "--drift-hours 0.0 must be in (0, 720]"),
        (["--base", "nope"], "--base: unknown device preset 'nope'"),
    ]
    for extra, needle in cases:
        code = main(["characterize", "sim://", "--out", str(tmp_path / "c.yaml"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and needle in err[0], (extra, err)
    assert main(["characterize", "sim://", "--out", str(tmp_path / "c.txt")]) != 0
    assert "ends in .yaml" in capsys.readouterr().err


def test_characterize_over_hil_serve(tmp_path: Path) -> None:
    """The same command through a ``hil serve`` (RemoteDriver): only the contract is used."""
    from tests.drivers.serve_proc import ServeProcess

    with ServeProcess("sim://?preset=hermes&seed=4", f"ipc://{tmp_path}/s.sock") as srv:
        out = tmp_path / "remote.yaml"
        args = ["--log-level", "warning", "characterize", srv.endpoint, "--chip", "1"]
        assert main([*args, "--region", "0:32,0:64", "--out", str(out), "--no-progress"]) == 0
    p = load_preset_file(out)
    h = get_preset("hermes")
    assert p.g_max_us == pytest.approx(h.g_max_us, rel=0.1)
    assert p.g_reset_us == pytest.approx(h.g_reset_us, rel=0.1)
    assert p.nu_mu_min == pytest.approx(h.nu_mu_min, rel=0.1)
