"""HardwareDriver passes the full driver conformance suite against the board emulator,
three ways: over a real pty, over socket://, and through ``hil serve board://…`` (ZeroMQ).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drivers.conformance import REQUIREMENTS, run_conformance
from tests.conftest import REPO_ROOT
from tests.procs import readline_within


def _assert_all_pass(target: str) -> None:
    report = run_conformance(target)
    assert len(report.outcomes) == len(REQUIREMENTS)
    assert report.passed, report.format()


def test_conformance_over_a_pty(emulator, setup_file) -> None:
    _assert_all_pass(f"board://{setup_file(emulator())}")


@pytest.mark.slow
def test_conformance_over_socket(emulator) -> None:
    # pyserial's socket:// close() sleeps 0.3 s (the suite opens the driver once).
    _assert_all_pass(f"board://?port={emulator(tcp=True)}")


@pytest.mark.slow
def test_conformance_through_hil_serve(emulator, setup_file) -> None:
    url = f"board://{setup_file(emulator())}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hil",
            "--log-level",
            "warning",
            "serve",
            url,
            "--bind",
            "tcp://127.0.0.1:*",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = readline_within(server.stdout, 30).strip()
        assert line.startswith("serving on tcp://"), line + (
            server.stderr.read() if server.stderr and server.poll() is not None else ""
        )
        _assert_all_pass(line.removeprefix("serving on "))
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - defensive
            server.kill()
            server.wait(timeout=10)
        for stream in (server.stdout, server.stderr):
            if stream:
                stream.close()


def test_driver_check_on_a_board_connects_once(emulator, setup_file) -> None:
    """One connection for the whole suite: the simulated-VISA warning appears once."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    url = f"board://{setup_file(emulator())}"
    res = subprocess.run(
        [sys.executable, "-m", "hil", "--log-json", "driver", "check", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert f"{len(REQUIREMENTS)}/{len(REQUIREMENTS)} requirements met" in res.stdout
    assert res.stderr.count("board_visa_simulated") == 1
