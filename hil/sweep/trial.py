"""One sweep trial: a real ``hil train`` process in the trial's run directory.

Runs inside a Ray worker but knows nothing of Ray: it depends only on the ``hil train`` /
``hil runs eval`` command line and the run directory's files. A trial

1. takes the trial's lock (``.sweep/locks/<id>.lock``, an ``flock`` inherited by the
   ``hil train`` child, so a child left over from a killed sweep keeps it until it exits);
2. skips the training if ``summary.json`` is there (finished before), resumes with
   ``hil train --resume`` if ``config.json`` is (a crashed attempt: the retry continues from
   the checkpoint), else starts ``hil train BASE --run-dir … --seed … --set …``;
3. tails ``metrics.jsonl`` and reports every new epoch (for progress and early stopping);
4. runs ``hil runs eval`` if the spec asks for a drift evaluation.

A non-zero exit raises :class:`TrialFailed` with the last line of the process's output; the
caller (Ray Tune) retries the trial up to the spec's ``retries``.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.errors import HilError

STATE = ".sweep"
LOCK_WAIT_S = 300.0
POLL_S = 0.5


class TrialFailed(HilError):
    """``hil train`` (or ``hil runs eval``) of a trial exited with an error."""


def state_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / STATE


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Complete lines of ``metrics.jsonl`` (a torn last line is ignored)."""
    file = Path(run_dir) / "metrics.jsonl"
    if not file.is_file():
        return []
    out = []
    for line in file.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def best_record(records: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The epoch of best valid metric (min NLL / max accuracy); the first of equals."""
    if not records:
        return None
    sign = -1.0 if kind == "accuracy" else 1.0
    return min(records, key=lambda r: sign * r[f"valid_{kind}"])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _lock(sweep_dir: Path, trial_id: str) -> int:
    locks = state_dir(sweep_dir) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{trial_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TrialFailed(
                    f"trial {trial_id}: another process still runs it after {LOCK_WAIT_S:.0f} s"
                ) from None
            time.sleep(POLL_S)


def _run(
    cmd: list[str],
    log: Path,
    pid_file: Path,
    env: dict[str, str],
    keep_fd: int,
    tail: Callable[[], None],
) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(keep_fd,),
            preexec_fn=_die_with_parent,
        )
        pid_file.parent.mkdir(exist_ok=True)
        pid_file.write_text(str(proc.pid))
        while proc.poll() is None:
            tail()
            time.sleep(POLL_S)
        tail()
        return proc.returncode


def _last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def run_trial(job: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run (or resume, or skip) one trial; ``report`` gets one dict per new epoch."""
    trial, sweep_dir = job["trial"], Path(job["sweep_dir"])
    kind = job["metric"].split("_", 1)[1]
    run_dir = sweep_dir / trial["id"]
    logs = state_dir(sweep_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **job.get("env", {}), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    hil = [sys.executable, "-m", "hil", "--log-level", "warning", "--no-log-json"]
    reported = 0

    def tail() -> None:
        nonlocal reported
        for rec in read_records(run_dir)[reported:]:
            report(
                {
                    "epoch": rec["epoch"],
                    f"valid_{kind}": rec[f"valid_{kind}"],
                    f"test_{kind}": rec[f"test_{kind}"],
                }
            )
            reported += 1

    pid_file = state_dir(sweep_dir) / "pids" / f"{trial['id']}.pid"
    fd = _lock(sweep_dir, trial["id"])
    try:
        attempt = len(list(logs.glob(f"{trial['id']}.*.log"))) + 1
        if not (run_dir / "summary.json").is_file():
            if (run_dir / "config.json").is_file():
                cmd = [*hil, "train", "--resume", "--run-dir", str(run_dir)]
                if job.get("epochs"):
                    cmd += ["--epochs", str(job["epochs"])]
            else:
                cmd = [*hil, "train", job["base"], "--run-dir", str(run_dir)]
                cmd += ["--seed", str(trial["seed"]), "--device", trial["device"]]
                if job.get("epochs"):
                    cmd += ["--epochs", str(job["epochs"])]
                for item in trial["overrides"]:
                    cmd += ["--set", item]
            cmd += ["--no-progress", "--checkpoint-every", str(job.get("checkpoint_every", 0))]
            log = logs / f"{trial['id']}.{attempt}.log"
            rc = _run(cmd, log, pid_file, env, fd, tail)
            if rc != 0:
                raise TrialFailed(f"trial {trial['id']}: hil train exited {rc}: {_last_line(log)}")
        drift = job.get("drift")
        if drift and not (run_dir / "drift_eval.json").is_file():
            cmd = [*hil, "runs", "eval", str(run_dir), "--at", *map(str, drift["at"])]
            cmd += ["--compensation", *drift["compensation"]]
            log = logs / f"{trial['id']}.{attempt}.eval.log"
            rc = _run(cmd, log, pid_file, env, fd, lambda: None)
            if rc != 0:
                raise TrialFailed(
                    f"trial {trial['id']}: hil runs eval exited {rc}: {_last_line(log)}"
                )
        tail()
        best = best_record(read_records(run_dir), kind)
        return {"done": True, **({"best_epoch": best["epoch"]} if best else {})}
    finally:
        os.close(fd)
