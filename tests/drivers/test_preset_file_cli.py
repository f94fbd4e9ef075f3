"""Preset files through the driver URL, ``hil serve`` and ``hil selfcheck``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers import InvalidRequest, open_driver
from drivers.remote import RemoteDriver
from hil.cli import main
from simulator import get_preset
from simulator.preset_file import write_preset_file
from tests.drivers.serve_proc import ServeProcess


@pytest.fixture
def chip_yaml(tmp_path: Path) -> Path:
    params = get_preset("hermes").replace(name="chip-7", g_max_us=12.5, p_dead=0.0)
    return write_preset_file(params, tmp_path / "chip.yaml")


def test_sim_url_accepts_a_preset_file(chip_yaml: Path) -> None:
    with open_driver(f"sim://?preset={chip_yaml}&seed=3") as drv:
        info = drv.info()
        assert info.preset == "chip-7" and info.g_max_us == 12.5


def test_sim_url_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("g_max_us: -3\n")
    with pytest.raises(InvalidRequest) as info:
        open_driver(f"sim://?preset={bad}")
    assert "field g_max_us" in str(info.value) and "\n" not in str(info.value)


def test_serve_with_a_preset_file_and_state_dir(chip_yaml: Path, tmp_path: Path) -> None:
    sock, state = f"ipc://{tmp_path}/s.sock", tmp_path / "state"
    url = f"sim://?preset={chip_yaml}&seed=1"
    for _ in range(2):  # the restart reopens the state made from the same file
        with ServeProcess(url, sock, ["--state-dir", str(state)]) as srv:
            with RemoteDriver(srv.endpoint, timeout_s=5) as remote:
                assert remote.info().preset == "chip-7"
                assert remote.info().g_max_us == 12.5


def test_serve_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fill_fraction: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hil", "serve", f"sim://?preset={bad}", "--bind", "inproc://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("hil serve: error")]
    assert len(err) == 1 and "field fill_fraction" in err[0]


def test_selfcheck_on_a_preset_file(chip_yaml: Path, tmp_path: Path) -> None:
    url = f"sim://?preset={chip_yaml}&seed=2"
    args = ["--log-level", "warning", "selfcheck", "--driver", url, "--out", str(tmp_path)]
    assert main([*args, "--rows", "16", "--cols", "8", "--batch", "8"]) == 0
    assert json.loads((tmp_path / "selfcheck.json").read_text())["preset"] == "chip-7"


def test_selfcheck_refuses_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("read_noise: maybe\n")
    args = ["selfcheck", "--driver", f"sim://?preset={bad}", "--out", str(tmp_path)]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "field read_noise" in err[0]
