"""The thin CLI commands of the driver layer: driver check, keys generate, serve restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivers.conformance_checks import REQUIREMENTS
from drivers.remote import RemoteDriver
from hil.cli import main
from protocols import Region
from tests.drivers.serve_proc import ServeProcess


def test_driver_check_passes_on_ideal_sim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "warning", "driver", "check", "sim://?preset=ideal"]) == 0
    out = capsys.readouterr().out
    n = len(REQUIREMENTS)
    assert f"{n}/{n} requirements met" in out and "FAIL" not in out


def test_driver_check_fails_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    url = "ipc:///nonexistent/dir/x.sock?timeout_s=0.05&retries=0"
    assert main(["--log-level", "critical", "driver", "check", url, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False
    assert [o["name"] for o in report["outcomes"]] == ["connect"]  # connects once, one line
    assert "nothing is listening" in report["outcomes"][0]["detail"]


def test_keys_generate_writes_pair_and_refuses_overwrite(tmp_path: Path) -> None:
    assert main(["keys", "generate", str(tmp_path), "--name", "alice"]) == 0
    assert (tmp_path / "alice.key").is_file() and (tmp_path / "alice.key_secret").is_file()
    assert (tmp_path / "alice.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", "generate", str(tmp_path), "--name", "alice"]) == 1


def test_serve_sigterm_persists_and_restart_restores(tmp_path: Path) -> None:
    sock, state = f"ipc://{tmp_path}/s.sock", tmp_path / "state"
    region = Region(1, 0, 4, 0, 4)
    target = np.linspace(-3, 3, 16).reshape(4, 4)
    with ServeProcess("sim://?preset=ideal", sock, ["--state-dir", str(state)]) as srv:
        with RemoteDriver(srv.endpoint, timeout_s=5) as remote:
            assert "snapshot" not in remote.info().capabilities  # in-process only
            remote.program(region, target, tolerance_us=0.1, max_iterations=5)
            t_before = remote.time_s()
    assert srv.proc is not None and srv.proc.returncode == 0
    with ServeProcess("sim://?preset=ideal", sock, ["--state-dir", str(state)]) as srv:
        with RemoteDriver(srv.endpoint, timeout_s=5) as remote:
            g = remote.read_conductances(region)
            net = ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2
            np.testing.assert_allclose(net, target, atol=1e-5)
            assert remote.time_s() >= t_before


def test_serve_refuses_state_dir_for_remote_urls(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "tcp://127.0.0.1:9", "--state-dir", "/tmp/x", "--bind", "inproc://x"])
    assert code == 1
    assert "does not apply to tcp:// drivers" in capsys.readouterr().err


def test_serve_reports_a_busy_address(capsys: pytest.CaptureFixture[str]) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        code = main(["serve", "sim://?preset=ideal", "--bind", f"tcp://127.0.0.1:{port}"])
    finally:
        sock.close()
    assert code == 1
    assert "cannot bind" in capsys.readouterr().err
