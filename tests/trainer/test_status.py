"""Run status from the run directory: running, stopped, failed, finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hil.errors import HilError
from hil.fsio import append_jsonl
from hil.trainer.session import TrainRequest, train
from hil.trainer.status import LOCK_FILE, RunBusy, RunLock, RunStatus, run_status
from tests.drivers.serve_proc import ServeProcess, wait_for

REPO = Path(__file__).resolve().parents[2]

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from hil.trainer.status import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _tiny_run(path: Path, small: tuple[str, ...], device: str = "software") -> None:
    train(TrainRequest(device=device, run_dir=path, epochs=1, overrides=small, progress=False))


def test_a_finished_run_is_finished_and_its_lock_released(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    _tiny_run(tmp_path / "run", small_overrides)
    info = run_status(tmp_path / "run")
    assert info.status is RunStatus.FINISHED
    assert info.pid == os.getpid()  # the lock file names the process that trained it
    with RunLock(tmp_path / "run", wait_s=0.1):  # nobody holds it any more
        # a finished event is final even while its trainer (holding the lock) exits
        assert run_status(tmp_path / "run").status is RunStatus.FINISHED
    report = (tmp_path / "run" / "report.html").read_text()
    assert '"status": "finished"' in report  # written after the finished event


def test_a_live_lock_holder_is_running_and_a_killed_one_failed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    append_jsonl(run / "events.jsonl", {"event": "start", "time": 0.0})
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        info = run_status(run)
        assert info.status is RunStatus.RUNNING and info.pid == proc.pid
        with pytest.raises(RunBusy, match=f"pid {proc.pid}"):
            with RunLock(run, wait_s=0.1):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert wait_for(lambda: run_status(run).status is not RunStatus.RUNNING, 10, 0.01)
    info = run_status(run)
    assert info.status is RunStatus.FAILED and "without a final event" in info.reason


@pytest.mark.parametrize(
    ("last", "status", "reason"),
    [
        # epochs numbered from 1, as the progress bar shows them (epoch: 1 completed)
        (
            {"event": "interrupted", "epoch": 1, "batch": 3},
            RunStatus.STOPPED,
            "epoch 2 after batch 3",
        ),
        (
            {"event": "interrupted", "epoch": 0, "batch": 5, "in_epoch": 1},
            RunStatus.STOPPED,
            "epoch 1 after batch 5",
        ),
        ({"event": "failed", "error": "DeviceTimeout: gone"}, RunStatus.FAILED, "gone"),
        ({"event": "error", "msg": "device lost"}, RunStatus.FAILED, "device lost"),
        ({"event": "programmed"}, RunStatus.FAILED, "without a final event"),
    ],
)
def test_the_last_event_decides_when_no_process_holds_the_lock(
    tmp_path: Path, last: dict, status: RunStatus, reason: str
) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "h"}))
    append_jsonl(tmp_path / "events.jsonl", {"event": "start"})
    append_jsonl(tmp_path / "events.jsonl", last)
    info = run_status(tmp_path)
    assert info.status is status and reason in info.reason


def test_finished_needs_the_summary_and_a_torn_event_line_is_ignored(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("")
    append_jsonl(tmp_path / "events.jsonl", {"event": "finished"})
    assert run_status(tmp_path).status is RunStatus.FAILED  # no summary.json
    (tmp_path / "summary.json").write_text("{}")
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"event": "start", "ti')  # torn last line
    assert run_status(tmp_path).status is RunStatus.FINISHED


def test_runs_without_a_lock_file_are_stopped_or_finished(tmp_path: Path) -> None:
    append_jsonl(tmp_path / "events.jsonl", {"event": "start"})
    assert run_status(tmp_path).status is RunStatus.STOPPED
    append_jsonl(tmp_path / "events.jsonl", {"event": "finished"})
    (tmp_path / "summary.json").write_text("{}")
    assert run_status(tmp_path).status is RunStatus.FINISHED


def test_a_refused_resume_leaves_a_finished_run_finished(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    run = tmp_path / "run"
    _tiny_run(run, small_overrides, device="sim://?preset=ideal&seed=0")
    with pytest.raises(HilError, match="holds preset 'ideal'"):
        train(
            TrainRequest(device="sim://?preset=hermes&seed=0", run_dir=run, resume=True, epochs=2)
        )
    assert run_status(run).status is RunStatus.FINISHED


@pytest.mark.slow
def test_a_run_whose_device_goes_away_is_failed_with_the_cause(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    run = tmp_path / "run"
    with ServeProcess("sim://?preset=ideal&seed=0", "tcp://127.0.0.1:*") as srv:
        args = [sys.executable, "-m", "hil", "--log-level", "warning", "train"]
        args += [str(REPO / "configs/jsb_osttp_hil.yaml"), "--epochs", "500", "--no-progress"]
        args += ["--device", f"{srv.endpoint}?timeout_s=0.5&retries=1", "--run-dir", str(run)]
        for o in small_overrides:
            args += ["--set", o]
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
            try:
                assert wait_for(lambda: (run / "metrics.jsonl").exists(), 120, 0.05)
                assert run_status(run).status is RunStatus.RUNNING
                srv.kill()
                assert proc.wait(60) != 0
            finally:
                proc.kill()
    info = run_status(run)
    assert info.status is RunStatus.FAILED and "DeviceTimeout" in info.reason


def test_a_refused_new_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    with pytest.raises(HilError):
        train(TrainRequest(device="software", run_dir=tmp_path / "r", overrides=("nope=1",)))
    assert not (tmp_path / "r").exists()
