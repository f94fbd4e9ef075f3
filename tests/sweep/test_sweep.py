"""`hil sweep` end to end on local Ray: trials are real `hil train` run directories."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil.trainer.runs import RunDir, list_runs, without_timing
from tests.drivers.serve_proc import ServeProcess, wait_for
from tests.sweep.conftest import (
    kill_session,
    run_sweep,
    start_sweep,
    write_spec,
)

pytestmark = pytest.mark.slow


def _events(run: Path) -> list[dict]:
    return RunDir(run).events()


def _locked(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _interval(run: Path) -> tuple[float, float]:
    ev = _events(run)
    return (
        min(e["time"] for e in ev if e["event"] in ("start", "resume")),
        max(e["time"] for e in ev if e["event"] == "finished"),
    )


def test_2x2_grid_gives_four_run_dirs_and_the_aggregate(tmp_path: Path, jsb_path: Path, ray_env):
    spec = write_spec(
        tmp_path / "s.yaml",
        jsb_path,
        grid={"optim.lr": [0.001, 0.01], "network.decay": [0.5, 0.6]},
        seeds=[0],
    )
    out = run_sweep(spec, tmp_path / "sw", ray_env)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = list_runs(tmp_path / "sw")
    assert len(runs) == 4 and all(r.summary() is not None for r in runs)
    assert {r.path for r in list_runs(tmp_path)} == {r.path for r in runs}  # runs/ lists trials
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert len(summary["trials"]) == 4 and summary["counts"]["done"] == 4
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 0
    for row in summary["trials"]:
        run_summary = RunDir(tmp_path / "sw" / row["run_dir"]).summary()
        assert row["test_nll"] == pytest.approx(run_summary["test_nll_at_best"])
        cfg = RunDir(tmp_path / "sw" / row["run_dir"]).read_json("config.json")
        assert cfg["optim"]["lr"] == row["params"]["optim.lr"]
        assert cfg["network"]["decay"] == row["params"]["network.decay"]
    points = summary["points"]
    assert len(points) == 4 and all(p["n"] == 1 and p["std"] is None for p in points)
    best = min(points, key=lambda p: p["mean"])
    assert summary["best_point"] == best["label"]
    assert "best point: " + best["label"] in out.stdout
    # the trials are ordinary runs for `hil runs list`
    listed = subprocess.run(
        [sys.executable, "-m", "hil", "runs", "list", str(tmp_path / "sw")],
        capture_output=True,
        text=True,
        env=ray_env,
        timeout=60,
        check=True,
    ).stdout
    assert sum(r["id"] in listed for r in summary["trials"]) == 4


def test_a_trial_killed_mid_run_is_retried_and_matches_an_uninterrupted_run(
    tmp_path: Path, jsb_path: Path, ray_env
):
    spec = write_spec(tmp_path / "s.yaml", jsb_path, epochs=6, retries=2, seeds=[3])
    spec.write_text(spec.read_text().replace("max_train_sequences: 8", "max_train_sequences: 48"))
    proc = start_sweep(spec, tmp_path / "sw", ray_env, tmp_path / "sweep.log")
    pids = tmp_path / "sw" / ".sweep" / "pids"
    try:
        assert wait_for(lambda: pids.is_dir() and any(pids.iterdir()), 180, 0.05)
        (pid_file,) = list(pids.iterdir())
        run_dir = tmp_path / "sw" / pid_file.stem
        assert wait_for(lambda: len(RunDir(run_dir).metrics()) >= 1, 120, 0.02)
        assert not (run_dir / "summary.json").exists()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the trial's `hil train`, mid-run
        assert proc.wait(240) == 0, (tmp_path / "sweep.log").read_text()
    finally:
        kill_session(proc)
    events = [e["event"] for e in _events(run_dir)]
    assert events.count("start") == 1 and events.count("resume") == 1
    # the same run, uninterrupted, from the trial's recorded config
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["train"]["max_train_sequences"] == 48 and cfg["train"]["seed"] == 3
    (tmp_path / "base.yaml").write_text(json.dumps(cfg))
    ref = tmp_path / "ref"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hil",
            "--log-level",
            "warning",
            "train",
            str(tmp_path / "base.yaml"),
            "--run-dir",
            str(ref),
            "--no-progress",
        ],
        env=ray_env,
        check=True,
        timeout=240,
        capture_output=True,
    )
    assert len(RunDir(ref).metrics()) == 6
    assert without_timing(RunDir(run_dir).metrics()) == without_timing(RunDir(ref).metrics())
    row = json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"][0]
    assert row["status"] == "done" and row["attempts"] == 2


def test_a_capacity_1_chip_serialises_its_trials_while_sim_trials_run_at_once(
    tmp_path: Path, jsb_path: Path, ray_env
):
    with ServeProcess("sim://?preset=hermes&seed=0", "tcp://127.0.0.1:*") as server:
        spec = write_spec(
            tmp_path / "s.yaml",
            jsb_path,
            epochs=2,
            seeds=[0, 1],
            devices=[
                {"url": "sim://?preset=hermes&seed={seed}"},
                {"url": server.endpoint, "capacity": 1},
            ],
            device_mode="axis",
        )
        # 4 Ray CPUs: both sim trials and a chip trial fit at once, so only the chip's
        # capacity can hold a trial back (with 2, Ray may pair a sim and a chip trial)
        out = run_sweep(spec, tmp_path / "sw", ray_env, "--num-cpus", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"]
    sim = [_interval(tmp_path / "sw" / r["id"]) for r in rows if r["device"].startswith("sim")]
    chip = [_interval(tmp_path / "sw" / r["id"]) for r in rows if r["device"].startswith("tcp")]
    assert len(sim) == 2 and len(chip) == 2
    (a0, a1), (b0, b1) = sorted(chip)
    assert a1 <= b0, f"chip trials overlap: {chip}"
    # "at once" as Ray scheduled them: both sim trials running in one step of Tune (their
    # processes' own start and end times depend on the machine's load, not on the sweep)
    sim_ids = {r["id"] for r in rows if r["device"].startswith("sim")}
    schedule = [
        json.loads(line)
        for line in (tmp_path / "sw" / ".sweep" / "schedule.jsonl").read_text().splitlines()
    ]
    assert any(sim_ids <= set(s["running"]) for s in schedule), schedule
    chip_ids = {r["id"] for r in rows if r["device"].startswith("tcp")}
    assert not any(chip_ids <= set(s["running"]) for s in schedule), schedule
    assert "waiting for a chip 1" in out.stdout or "waiting for a chip 2" in out.stdout


def test_resume_after_killing_the_sweep_runs_only_unfinished_trials(
    tmp_path: Path, jsb_path: Path, ray_env
):
    spec = write_spec(
        tmp_path / "s.yaml", jsb_path, epochs=2, grid={"optim.lr": [0.001, 0.003, 0.01, 0.03]}
    )
    sweep = tmp_path / "sw"
    proc = start_sweep(spec, sweep, ray_env, tmp_path / "sweep.log")
    try:
        done = lambda: [p for p in sweep.glob("0*") if (p / "summary.json").is_file()]  # noqa: E731
        assert wait_for(lambda: len(done()) >= 1, 240, 0.05), (tmp_path / "sweep.log").read_text()
    finally:
        kill_session(proc)  # kill -9 the sweep (and what it started)
    # a Ray worker outlives its killed driver briefly; its `hil train` holds the trial lock
    assert wait_for(lambda: not any(map(_locked, (sweep / ".sweep" / "locks").iterdir())), 120)
    finished = {p.name: (p / "events.jsonl").read_text() for p in done()}
    assert 1 <= len(finished) < 4
    out = run_sweep(spec, sweep, ray_env, "--resume")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{4 - len(finished)} of 4 trials to run" in out.stdout
    summary = json.loads((sweep / "sweep.json").read_text())
    assert summary["counts"]["done"] == 4
    for name, events in finished.items():  # not touched again
        assert (sweep / name / "events.jsonl").read_text() == events
        assert len(list((sweep / ".sweep" / "logs").glob(f"{name}.*"))) == 1
    # a new sweep in the same directory is refused; a finished one resumes to nothing
    again = run_sweep(spec, sweep, ray_env)
    assert again.returncode == 1 and "already holds a sweep" in again.stderr
    noop = run_sweep(spec, sweep, ray_env, "--resume")
    assert noop.returncode == 0 and "best point" in noop.stdout


def test_asha_stops_a_poor_trial_early_and_resume_counts_it_finished(
    tmp_path: Path, jsb_path: Path, ray_env
):
    # one trial at a time, the best learning rate first: ASHA (halving at every epoch) lets
    # it run and stops the far worse ones at a rung. The trial's epochs on the tiny subset take
    # a fraction of a second, so it gets enough of them that Ray's stop decision (asynchronous
    # to the trial) lands before the trial could finish on its own.
    spec = write_spec(
        tmp_path / "s.yaml",
        jsb_path,
        epochs=16,
        grid={"optim.lr": [0.02, 0.0001]},
        early_stopping={"grace_epochs": 1, "reduction_factor": 2},
    )
    sweep = tmp_path / "sw"
    out = run_sweep(spec, sweep, ray_env, "--max-concurrent", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {
        r["params"]["optim.lr"]: r for r in json.loads((sweep / "sweep.json").read_text())["trials"]
    }
    assert rows[0.02]["status"] == "done" and rows[0.02]["epochs"] == 16
    assert rows[0.0001]["status"] == "stopped early" and rows[0.0001]["epochs"] < 16
    assert not (sweep / rows[0.0001]["id"] / "summary.json").exists()
    logs = sorted((sweep / ".sweep" / "logs").iterdir())
    again = run_sweep(spec, sweep, ray_env, "--resume")  # nothing left to run
    assert again.returncode == 0 and "trials to run" not in again.stdout
    assert sorted((sweep / ".sweep" / "logs").iterdir()) == logs
    assert "best point: optim.lr=0.02" in again.stdout
