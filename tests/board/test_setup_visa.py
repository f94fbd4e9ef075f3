"""Lab set-up file, board:// URLs, the VISA instrument tables (pyvisa-sim) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from drivers.board import open_board, parse_board_url
from drivers.board.errors import InstrumentError, SetupError
from drivers.board.visa import PULSE_GENERATOR, THERMOMETER, LabInstruments
from protocols import Region
from tests.conftest import REPO_ROOT

PULSEGEN = "TCPIP0::192.168.0.10::inst0::INSTR"
THERMO = "GPIB0::12::INSTR"


def test_board_url_overrides_the_setup_file(setup_file) -> None:
    path = setup_file("/dev/ttyUSB0", pulse={"width_ns": 80.0})
    s = parse_board_url(f"board://{path}?port=socket://127.0.0.1:9&retries=7&timeout_s=0.25")
    assert (s.link.port, s.link.retries, s.link.timeout_s) == ("socket://127.0.0.1:9", 7, 0.25)
    assert s.pulse.width_ns == 80.0 and s.board.firmware == ("1.2", "1.3", "1.4")
    bare = parse_board_url("board://?port=rfc2217://lab:4000&visa_backend=@py")
    assert bare.link.port == "rfc2217://lab:4000" and bare.visa.backend == "@py"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("board://", "neither a set-up file nor"),
        ("board://?port=x&colour=red", "unknown board URL option 'colour'"),
        ("board://?port=x&retries=many", "retries='many'"),
        ("board:///nonexistent/lab.yaml", "cannot read the lab set-up file"),
    ],
)
def test_bad_board_urls_say_what_to_fix(url: str, match: str) -> None:
    with pytest.raises(SetupError, match=match):
        parse_board_url(url)


def test_invalid_setup_values_are_refused(setup_file) -> None:
    path = setup_file("/dev/ttyUSB0", pulse={"limits": {"amplitude_v": [2.0, 1.0]}})
    with pytest.raises(SetupError, match="lo <= hi"):
        parse_board_url(f"board://{path}")
    path = setup_file("/dev/ttyUSB0", name="typo.yaml", link={"baud": 9600})
    with pytest.raises(SetupError, match="baud"):
        parse_board_url(f"board://{path}")


def test_scpi_tables_against_the_simulated_instruments() -> None:
    lab = LabInstruments("@sim", PULSEGEN, THERMO)
    try:
        gen = lab.pulse_generator
        assert "SIM-PULSEGEN" in str(gen.get("identity"))
        gen.set("amplitude_v", 1.35)
        gen.set("width_s", 7.5e-8)
        assert gen.get("amplitude_v") == pytest.approx(1.35)
        assert gen.get("width_s") == pytest.approx(7.5e-8)
        assert gen.writes == ["VOLT 1.3500", "PULS:WIDT 7.5000e-08"]
        assert isinstance(lab.thermometer.get("temperature_c"), float)
        with pytest.raises(InstrumentError, match="read-only"):
            lab.thermometer.set("temperature_c", 20.0)
        with pytest.raises(InstrumentError, match="refused|answered"):
            gen.set("amplitude_v", 7.0)  # beyond the instrument's own 5 V range
    finally:
        lab.close()
    assert set(PULSE_GENERATOR) >= {"amplitude_v", "width_s"} and "temperature_c" in THERMOMETER


def test_unknown_visa_resource_is_a_clear_error() -> None:
    with pytest.raises(InstrumentError, match="GPIB0::99::INSTR"):
        LabInstruments("@sim", PULSEGEN, "GPIB0::99::INSTR")


def test_driver_sets_the_pulse_shape_and_reads_both_thermometers(emulator, setup_file) -> None:
    path = setup_file(emulator(), pulse={"amplitude_v": 1.1, "width_ns": 60.0})
    with open_board(f"board://{path}") as d:
        gen = d.instruments.pulse_generator
        assert gen.get("amplitude_v") == pytest.approx(1.1)
        assert gen.get("width_s") == pytest.approx(60e-9)
        assert gen.get("output") == 1
        d.set_pulse_shape(1.5, 100.0)
        assert gen.get("amplitude_v") == pytest.approx(1.5)
        assert 0.0 < d.temperature_c() < 100.0 and 0.0 < d.lab_temperature_c() < 100.0


def test_requests_larger_than_a_frame_are_split_and_exact(emulator, setup_file) -> None:
    """On the ideal preset, a tiled MVM equals x_q @ G_net of the read-back conductances,
    and pulse counts above the board's 255 per command arrive in several passes."""
    path = setup_file(
        emulator(preset="ideal"),
        link={"max_payload_bytes": 128},
        pulse={"limits": {"max_pulses_per_device": 300}},
    )
    region = Region(1, 3, 13, 5, 45)  # 10 x 40 cells: several tiles of every command
    rng = np.random.default_rng(1)
    with open_board(f"board://{path}") as d:
        sent = d.link.stats.frames_sent
        d.program(region, rng.uniform(-4, 4, region.shape), tolerance_us=0.05, max_iterations=50)
        assert d.link.stats.frames_sent - sent > 2
        x = rng.uniform(-1, 1, (9, region.rows))
        y = d.mvm(region, x)
        g = d.read_conductances(region).astype(np.float64)
        net = ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2
        x_q = np.rint(x * 127) / 127
        np.testing.assert_allclose(y, x_q @ net, atol=2e-3 * region.rows / 10)

        small = Region(0, 0, 1, 0, 2)
        d.reset(small)
        counts = np.zeros((1, 2, 4), np.int32)
        counts[0, 0, 0] = 300
        rep = d.apply_pulses(small, counts)
        assert rep.set_pulses == 300
        g = d.read_conductances(small)
        # ideal: fixed 0.1 µS SET steps from 0 µS, clipped at g_max
        assert g[0, 0, 0] == pytest.approx(min(300 * 0.1, d.info().g_max_us), abs=2e-3)
        assert float(np.abs(g[0, 1]).max()) < 2e-3

        # A sparse update (2 % of the devices) travels as PULSE_SPARSE: same effect, fewer bytes.
        sparse = np.where(
            rng.random((*region.shape, 4)) < 0.02, rng.integers(1, 6, (*region.shape, 4)), 0
        )
        d.reset(region)
        sent = d.link.stats.bytes_written
        d.apply_pulses(region, sparse)
        assert d.link.stats.bytes_written - sent < 0.5 * region.rows * region.cols * 4
        g = d.read_conductances(region)
        np.testing.assert_allclose(g, np.minimum(0.1 * sparse, d.info().g_max_us), atol=2e-3)


def test_cli_rejects_bad_options_with_a_clear_message() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    bad = subprocess.run(
        [sys.executable, "-m", "hil", "board-emulator", "--fault-rate", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 1 and "--fault-rate 2.0 must be in [0, 1]" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "hil", "board-emulator", "--preset", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 1 and "nope" in bad.stderr
