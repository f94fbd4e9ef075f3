"""Device trouble in a run, as the operator meets it (#13 item 4), and resume messages.

A served chip is killed (SIGKILL) while a run trains on it: retries are logged as they
happen, the run ends with ONE line naming the cause and the exact ``--resume`` command,
``events.jsonl`` gets an ``error`` event, the checkpoint stays resumable, and the run
finishes once the server is back (restarted on its state directory, at a new address).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.trainer.runs import RunDir
from hil.trainer.session import TrainRequest, train
from hil.trainer.status import RunStatus, run_status
from tests.drivers.serve_proc import ServeProcess, wait_for

REPO = Path(__file__).resolve().parents[2]


def _hil(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hil", "--log-json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )


def _said(stderr: str) -> list[str]:
    """The lines of stderr that are not JSON log records: what the operator reads."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def _logs(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.timeout(600)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
def test_server_killed_mid_run_ends_it_in_one_line_and_it_resumes(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    sim = "sim://?preset=hermes&seed=0"
    state = ["--state-dir", str(tmp_path / "chips")]
    run_dir = tmp_path / "run"
    sets = [*small_overrides, "train.max_train_sequences=24"]
    srv = ServeProcess(sim, "tcp://127.0.0.1:*", state, log_path=tmp_path / "serve.log").start()
    try:
        args = [sys.executable, "-m", "hil", "--log-json", "train"]
        args += [str(REPO / "configs/jsb_osttp_hil.yaml"), "--epochs", "30", "--no-progress"]
        args += ["--device", f"{srv.endpoint}?timeout_s=0.5&retries=2&backoff_s=0.05"]
        args += ["--run-dir", str(run_dir)]
        for s in sets:
            args += ["--set", s]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
        )
        try:
            assert wait_for(lambda: (run_dir / "metrics.jsonl").exists(), 120, 0.02)
            srv.kill()  # the device goes away for good, mid-run
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait(10)
    finally:
        srv.kill()
    assert proc.returncode == 3, err[-2000:]
    said = _said(err)
    assert len(said) == 1, (said, err[-3000:])
    line = said[0]
    assert line.startswith("hil train: error: device lost: no reply from tcp://127.0.0.1:"), line
    assert line.endswith(f"; continue with: hil train --resume --run-dir {run_dir}"), line
    # each retry was logged as it happened: attempts 2/3 and 3/3 of the failing request
    retries = [r["msg"] for r in _logs(err) if r.get("event") == "device_retry"]
    assert retries[-2:] == [
        "device unreachable, retrying 2/3",
        "device unreachable, retrying 3/3",
    ], err[-3000:]
    last = RunDir.open(run_dir).events()[-1]
    assert last["event"] == "error" and last["error"].startswith("DeviceTimeout: ")
    assert last["resume"] == f"hil train --resume --run-dir {run_dir}"
    ck = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert last["checkpoint"] == {k: ck[k] for k in ("epoch", "batch", "generation")}
    assert ck["epoch"] >= 1 and f"end of epoch {ck['epoch']}" in line, (ck, line)
    assert run_status(run_dir).status is RunStatus.FAILED

    # the server comes back on its state directory (another port: --device names it)
    with ServeProcess(sim, "tcp://127.0.0.1:*", state, log_path=tmp_path / "serve2.log") as srv2:
        res = _hil(
            "train", "--resume", "--run-dir", str(run_dir), "--epochs", str(ck["epoch"] + 1),
            "--device", srv2.endpoint, "--no-progress",
        )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines()[0] == (
        f"resuming {run_dir} at epoch {ck['epoch'] + 1}/{ck['epoch'] + 1} "
        f"({ck['epoch']} epoch{'s' if ck['epoch'] != 1 else ''} done) from checkpoint "
        f"generation {ck['generation']} ({run_dir / 'checkpoint' / 'state.json'}; chips "
        f"continue as they are)"
    )
    assert run_status(run_dir).status is RunStatus.FINISHED
    assert len(RunDir.open(run_dir).metrics()) == ck["epoch"] + 1


def test_resuming_a_finished_run_says_so_and_changes_nothing(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    run_dir = tmp_path / "run"
    req = TrainRequest(
        device="sim://?preset=hermes&seed=1",
        run_dir=run_dir,
        epochs=1,
        overrides=small_overrides,
        progress=False,
    )
    first = train(req)

    def files() -> dict[str, tuple[bytes, int, int]]:
        return {
            str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "run.lock"
        }

    before = files()
    said: list[str] = []
    again = train(TrainRequest(run_dir=run_dir, resume=True, progress=False), notify=said.append)
    assert said == [
        f"run {run_dir} already finished 1 epoch; nothing to resume, nothing changed "
        f"(--epochs N with N > 1 extends it)"
    ]
    assert again == first and again["wall_s"] == first["wall_s"]
    assert files() == before
    # one mode for every file of the run (report, logs, JSON, arrays, chip snapshots)
    assert len({mode for _, _, mode in before.values()}) == 1, {
        name: oct(mode) for name, (_, _, mode) in before.items()
    }
