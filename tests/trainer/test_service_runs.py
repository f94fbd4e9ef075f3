"""The same training run in-process and over the service, including a server crash."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hil.trainer.runs import RunDir, without_timing
from hil.trainer.session import TrainRequest, train
from tests.drivers.serve_proc import ServeProcess, wait_for

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(900)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
def test_same_run_in_process_and_over_tcp(tmp_path: Path, small_overrides: tuple[str, ...]) -> None:
    sim = "sim://?preset=hermes&seed=4"
    kw = dict(epochs=2, overrides=small_overrides, progress=False)
    local = train(TrainRequest(device=sim, run_dir=tmp_path / "local", **kw))
    with ServeProcess(sim, "tcp://127.0.0.1:*", log_path=tmp_path / "serve.log") as srv:
        remote = train(TrainRequest(device=srv.endpoint, run_dir=tmp_path / "remote", **kw))
    remote_m, local_m = (
        RunDir.open(tmp_path / "remote").metrics(),
        RunDir.open(tmp_path / "local").metrics(),
    )
    assert without_timing(remote_m) == without_timing(local_m)
    assert remote["test_nll"] == local["test_nll"]
    # link accounting: bytes per epoch over TCP (no baud rate), nothing in-process
    for m in remote_m:
        assert m["link_bytes"] == m["link_bytes_sent"] + m["link_bytes_received"] > 0
        assert "link_s_est" not in m
        assert 0 < m["train_s"] and 0 < m["eval_s"] and m["train_s"] + m["eval_s"] <= m["epoch_s"]
    assert all("link_bytes" not in m for m in local_m)


@pytest.mark.timeout(900)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
def test_server_killed_mid_run_is_restarted_and_nothing_is_applied_twice(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    """kill -9 the server while a run streams pulses; restart it on the same state dir.

    The ideal preset has deterministic pulses and no drift, so a lost or doubled pulse
    request would show in the final conductances and metrics against an uncrashed run.
    """
    sim = "sim://?preset=ideal&seed=0"
    sets = [*small_overrides, "train.max_train_sequences=24", "device.max_pulses_per_update=20"]
    args = [
        "--log-level",
        "warning",
        "train",
        str(REPO / "configs/jsb_osttp_hil.yaml"),
        "--epochs",
        "2",
        "--no-progress",
    ]
    for s in sets:
        args += ["--set", s]

    def run_against(endpoint: str, run_dir: Path) -> subprocess.Popen[str]:
        url = f"{endpoint}?timeout_s=1&retries=30&backoff_s=0.1"
        return subprocess.Popen(
            [sys.executable, "-m", "hil", *args, "--device", url, "--run-dir", str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )

    # reference: the same run against a server that never crashes
    with ServeProcess(sim, "tcp://127.0.0.1:*", ["--state-dir", str(tmp_path / "s0")]) as srv:
        ref = run_against(srv.endpoint, tmp_path / "ref")
        out, err = ref.communicate(timeout=300)
        assert ref.returncode == 0, err

    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    state = ["--state-dir", str(tmp_path / "s1")]
    srv = ServeProcess(sim, endpoint, state, log_path=tmp_path / "serve1.log").start()
    trainer = run_against(endpoint, tmp_path / "crash")
    try:
        events = tmp_path / "crash" / "events.jsonl"
        assert wait_for(lambda: events.exists() and "programmed" in events.read_text(), 120)
        time.sleep(1.0)  # into the pulse stream
        srv.kill()
        time.sleep(0.5)
        srv = ServeProcess(sim, endpoint, state, log_path=tmp_path / "serve2.log").start()
        out, err = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, err
    finally:
        trainer.kill()
        srv.terminate()
    crashed, reference = RunDir.open(tmp_path / "crash"), RunDir.open(tmp_path / "ref")
    assert without_timing(crashed.metrics()) == without_timing(reference.metrics())
    with (
        np.load(tmp_path / "crash" / "conductances_after.npz") as a,
        np.load(tmp_path / "ref" / "conductances_after.npz") as b,
    ):
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
