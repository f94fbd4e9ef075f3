"""Sweep tests: real `hil sweep` processes on a small local Ray (2 CPUs, no dashboard, a
short temporary Ray directory), over tiny `hil train` runs on the real JSB file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SWEEP_TIMEOUT_S = 240.0

TINY = {
    "network.hidden": [24],
    "train.batch_size": 4,
    "train.max_train_sequences": 8,
    "train.max_eval_sequences": 4,
}


def needs_ray() -> None:
    pytest.importorskip("ray", reason="needs the `sweep` extra (pip install -e '.[sweep]')")


@pytest.fixture
def ray_env() -> Iterator[dict[str, str]]:
    """Environment for a `hil sweep` child: Ray's files in a short, fresh temp dir (unix
    socket paths must stay under 108 bytes), removed afterwards."""
    needs_ray()
    tmp = tempfile.mkdtemp(prefix="hilray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


def write_spec(path: Path, jsb: Path, **fields: Any) -> Path:
    spec = {
        "name": "t",
        "base": str(REPO / "configs" / "jsb_osttp_hil.yaml"),
        "epochs": 1,
        "set": {**TINY, "data.path": str(jsb)},
        **fields,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cmd(spec: Path | None, sweep_dir: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "hil", "--log-level", "warning", "sweep"]
    args += [str(spec)] if spec else []
    return [*args, "--sweep-dir", str(sweep_dir), "--num-cpus", "2", "--no-progress", *extra]


def run_sweep(
    spec: Path | None, sweep_dir: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sweep_cmd(spec, sweep_dir, *extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
        check=False,
    )


def start_sweep(spec: Path, sweep_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A `hil sweep` in its own session (so that everything it started can be ended)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            sweep_cmd(spec, sweep_dir),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the sweep, then whatever it left in its session (Ray's helpers)."""
    for sig_target in (proc.pid,):
        try:
            os.kill(sig_target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
