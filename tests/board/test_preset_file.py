"""``hil board-emulator --preset chip.yaml``: the emulated board's chips from a preset file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from drivers import open_driver
from simulator import get_preset
from simulator.preset_file import write_preset_file


def test_board_emulator_runs_a_preset_file(emulator, tmp_path: Path) -> None:
    params = get_preset("hermes").replace(name="chip-9", g_max_us=11.5)
    path = write_preset_file(params, tmp_path / "chip.yaml")
    address = emulator(tcp=True, preset=str(path))
    with open_driver(f"board://?port={address}") as drv:
        assert drv.info().g_max_us == 11.5


def test_board_emulator_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("p_stuck_gmax: -0.1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hil", "board-emulator", "--tcp", "0", "--preset", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    err = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "field p_stuck_gmax" in err[0]
