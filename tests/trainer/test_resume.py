"""kill -9 the trainer mid-epoch, then --resume: the run ends exactly as if never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil.trainer.runs import RunDir, without_timing
from hil.trainer.session import TrainRequest, train
from hil.trainer.status import RunStatus, run_status
from tests.drivers.serve_proc import wait_for

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(900)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
@pytest.mark.parametrize("device", ["sim://?preset=hermes&seed=2", "software"])
def test_resume_after_kill_equals_an_uninterrupted_run(
    tmp_path: Path, small_overrides: tuple[str, ...], device: str
) -> None:
    sets = (*small_overrides, "train.max_train_sequences=48")
    ref = train(
        TrainRequest(
            device=device,
            run_dir=tmp_path / "ref",
            epochs=3,
            overrides=sets,
            progress=False,
            checkpoint_every=1,
        )
    )

    args = [
        sys.executable,
        "-m",
        "hil",
        "--log-level",
        "warning",
        "train",
        str(REPO / "configs/jsb_osttp_hil.yaml"),
        "--device",
        device,
        "--epochs",
        "3",
        "--run-dir",
        str(tmp_path / "run"),
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]
    for s in sets:
        args += ["--set", s]
    log = tmp_path / "train.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ})
    try:

        def mid_epoch() -> bool:
            ck = _checkpoint(tmp_path / "run")
            return ck is not None and ck["epoch"] >= 1 and ck["batch"] >= 3

        assert wait_for(mid_epoch, 120, 0.01), log.read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
    stopped_at = _checkpoint(tmp_path / "run")
    assert stopped_at is not None and stopped_at["epoch"] < 3
    killed = run_status(tmp_path / "run")
    assert killed.status is RunStatus.FAILED and "without a final event" in killed.reason

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hil",
            "--log-level",
            "warning",
            "train",
            "--resume",
            "--run-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert res.returncode == 0, res.stderr
    resumed = RunDir.open(tmp_path / "run")
    assert without_timing(resumed.metrics()) == without_timing(
        RunDir.open(tmp_path / "ref").metrics()
    )
    assert resumed.summary()["test_nll"] == ref["test_nll"]  # type: ignore[index]
    assert "resume" in {e["event"] for e in resumed.events()}
    assert run_status(resumed.path).status is RunStatus.FINISHED


@pytest.mark.timeout(900)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
def test_ctrl_c_stops_at_a_batch_boundary_with_a_checkpoint(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    sets = (*small_overrides, "train.max_train_sequences=48")
    ref = train(
        TrainRequest(
            device="software", run_dir=tmp_path / "ref", epochs=3, overrides=sets, progress=False
        )
    )
    args = [
        sys.executable,
        "-m",
        "hil",
        "--log-level",
        "warning",
        "train",
        str(REPO / "configs/jsb_osttp_hil.yaml"),
        "--device",
        "software",
        "--epochs",
        "3",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    for s in sets:
        args += ["--set", s]
    log = tmp_path / "train.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ})
    try:
        assert wait_for(lambda: (tmp_path / "run" / "metrics.jsonl").exists(), 120, 0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
        proc.wait(10)
    assert "--resume" in log.read_text()
    ck = _checkpoint(tmp_path / "run")
    assert ck is not None and ck["epoch"] < 3
    stop = RunDir.open(tmp_path / "run").events()[-1]
    assert stop["event"] == "interrupted" and stop["in_epoch"] == ck["epoch"] + 1
    # one line, labelled a stop (not an error), numbering epochs from 1 as the bar does
    said = [line for line in log.read_text().splitlines() if line.startswith("hil train:")]
    assert said == [
        f"hil train: stopped: on request, in epoch {ck['epoch'] + 1}/3 after batch "
        f"{ck['batch']}/12; checkpoint written; continue with: hil train --resume --run-dir "
        f"{tmp_path / 'run'}"
    ], said
    assert run_status(tmp_path / "run").status is RunStatus.STOPPED
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hil",
            "--log-level",
            "warning",
            "train",
            "--resume",
            "--run-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert res.returncode == 0, res.stderr
    at = f"epoch {ck['epoch'] + 1}/3" + (f", batch {ck['batch'] + 1}" if ck["batch"] else "")
    assert res.stdout.startswith(f"resuming {tmp_path / 'run'} at {at} ("), res.stdout
    assert without_timing(RunDir.open(tmp_path / "run").metrics()) == without_timing(
        RunDir.open(tmp_path / "ref").metrics()
    )
    assert RunDir.open(tmp_path / "run").summary()["test_nll"] == ref["test_nll"]  # type: ignore[index]
