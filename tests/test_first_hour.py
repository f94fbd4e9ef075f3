"""An operator's first hour (#13, "done when"): the README's commands in sequence on a fresh
machine — empty cache and home, no data directory (the shipped standard split is used),
no network — each as the operator types it (``python -m hil …`` subprocesses).

demo → train → runs list / show → resume (extend, then a finished run) → a served run
(``hil serve`` on 127.0.0.1, stopped) → a refused key → an unreachable device → a bad
``--set``. Figures are checked against the run's own files; every error must be ONE line
on stderr (log records, JSON lines when stderr is not a terminal, aside) from a command
that returns (generous subprocess timeouts; the 3 s connection probe is what keeps them
short, and no test asserts wall-clock speed). Small on purpose: a few pieces, 1–2 epochs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hil.procs import ServeProcess

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/jsb_osttp_hil.yaml")
SMALL = (
    "--set", "network.hidden=[24]",
    "--set", "train.batch_size=4",
    "--set", "train.max_train_sequences=8",
    "--set", "train.max_eval_sequences=4",
)  # fmt: skip
TIMEOUT_S = 300  # a bound for a hung command, not a speed requirement

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def operator(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine: own HOME and XDG cache, no data directory,
    no cache override, offline."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HIL_DATA_DIR", "HIL_CACHE_DIR", "HIL_JSB_URL", "XDG_CACHE_HOME")
    }
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        HIL_OFFLINE="1",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    return env


def hil(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hil", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        cwd=cwd,
        check=False,
    )


def said(stderr: str) -> list[str]:
    """stderr minus JSON log records: what the operator reads as the answer."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def one_error_line(res: subprocess.CompletedProcess[str], command: str) -> str:
    assert res.returncode != 0, res.stdout
    lines = said(res.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hil {command}: error: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary_matches_metrics(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["epochs"] == len(metrics)
    assert summary["test_nll"] == metrics[-1]["test_nll"]
    best = min(metrics, key=lambda r: r["valid_nll"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["pulses"] == sum(r.get("pulses", 0) for r in metrics)
    assert 0 < summary["test_nll"] < 100  # a finite NLL over 88 keys
    return summary


def test_first_hour(tmp_path: Path, operator: dict[str, str]) -> None:
    env, cwd = operator, tmp_path

    # --- demo: the shipped standard split, said so, and not comparable when cut
    res = hil(env, cwd, "demo", "--epochs", "1", "--run-dir", "runs/demo", "--no-progress",
              "--set", "train.max_train_sequences=8", "--set", "train.max_eval_sequences=4")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "copy shipped in the package" in res.stdout
    assert "test NLL NOT comparable to published numbers" in res.stdout
    assert "runs/demo: 1 epoch, test NLL " in res.stdout  # "1 epoch", not "1 epochs"
    # program-and-verify: achieved against the tolerance, iterations against the cap
    programmed = [ln for ln in res.stdout.splitlines() if ln.startswith("programmed ")]
    assert len(programmed) == 3, res.stdout
    for ln in programmed:
        assert "cells verified within ±0.30 µS in " in ln and "/20 iterations" in ln, ln
    demo = summary_matches_metrics(cwd / "runs/demo")
    assert demo["data_source"].startswith("jsb-standard:") and demo["pulses"] > 0
    assert (cwd / "runs/demo/report.html").stat().st_size > 10_000
    assert not (cwd / "home/.cache/pcm-hil").exists()  # nothing built, nothing fetched

    # --- train, then runs list / show
    res = hil(env, cwd, "train", CONFIG, "--epochs", "1", "--run-dir", "runs/t1",
              "--no-progress", *SMALL)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    t1 = summary_matches_metrics(cwd / "runs/t1")
    modes = {p.stat().st_mode & 0o777 for p in (cwd / "runs/t1").rglob("*") if p.is_file()}
    assert len(modes) == 1, modes  # report and run files alike

    res = hil(env, cwd, "runs", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {Path(r["run"]).name: r for r in json.loads(res.stdout)}
    assert set(rows) == {"demo", "t1"}
    assert rows["t1"]["status"] == "finished" and rows["t1"]["epochs"] == 1
    assert rows["t1"]["test_at_best"] == t1["test_nll_at_best"]
    assert rows["t1"]["data_source"] == t1["data_source"]
    res = hil(env, cwd, "runs", "list")
    assert res.returncode == 0 and "finished" in res.stdout and "t1" in res.stdout
    res = hil(env, cwd, "runs", "show", "runs/t1")
    assert res.returncode == 0, res.stderr
    assert f"test {t1['test_nll']:.3f}" in res.stdout
    assert "report: runs/t1/report.html" in res.stdout

    # --- resume: extend by an epoch (it says where from), then a finished run is left alone
    res = hil(env, cwd, "train", "--resume", "--run-dir", "runs/t1", "--epochs", "2",
              "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("resuming runs/t1 at epoch 2/2 (1 epoch done) from ")
    t1b = summary_matches_metrics(cwd / "runs/t1")
    assert t1b["epochs"] == 2
    before = (cwd / "runs/t1/summary.json").read_bytes()
    res = hil(env, cwd, "train", "--resume", "--run-dir", "runs/t1", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("run runs/t1 already finished 2 epochs; nothing to resume")
    assert (cwd / "runs/t1/summary.json").read_bytes() == before  # wall_s untouched

    # --- a served run: hil serve on 127.0.0.1, a run against it, the server stopped
    sim = "sim://?preset=hermes&seed=0"
    with ServeProcess(sim, "tcp://127.0.0.1:*", env=env, log_path=tmp_path / "serve.log") as srv:
        res = hil(env, cwd, "train", CONFIG, "--epochs", "1", "--device", srv.endpoint,
                  "--run-dir", "runs/served", "--no-progress", *SMALL)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        assert srv.terminate() == 0
    served = summary_matches_metrics(cwd / "runs/served")
    assert served["device"] == srv.endpoint and served["pulses"] > 0

    # --- a refused key: a server that needs CURVE keys, a client without / with an unknown key
    keys, other = tmp_path / "keys", tmp_path / "other"
    for folder, name in ((keys, "server"), (keys, "alice"), (other, "mallory")):
        assert hil(env, cwd, "keys", "generate", str(folder), "--name", name).returncode == 0
    auth = tmp_path / "auth"
    auth.mkdir()
    for name in ("server.key", "server.key_secret", "alice.key"):
        (auth / name).write_bytes((keys / name).read_bytes())
    with ServeProcess(sim, "tcp://127.0.0.1:*", ["--auth-keys", str(auth)], env=env,
                      log_path=tmp_path / "serve-auth.log") as srv:  # fmt: skip
        res = hil(env, cwd, "train", CONFIG, "--device", srv.endpoint, "--run-dir",
                  "runs/nokey", "--no-progress", *SMALL)  # fmt: skip
        line = one_error_line(res, "train")
        assert "CURVE" in line, line
        url = (f"{srv.endpoint}?server_key={keys / 'server.key'}"
               f"&client_key={other / 'mallory.key_secret'}")  # fmt: skip
        res = hil(env, cwd, "train", CONFIG, "--device", url, "--run-dir", "runs/badkey",
                  "--no-progress", *SMALL)  # fmt: skip
        line = one_error_line(res, "train")
        assert "key" in line, line
        res = hil(env, cwd, "driver", "check", srv.endpoint)
        assert res.returncode == 1
        fails = [ln for ln in res.stdout.splitlines() if "FAIL" in ln]
        assert len(fails) == 1 and "connect" in fails[0], res.stdout
    assert not (cwd / "runs/nokey").exists() and not (cwd / "runs/badkey").exists()

    # --- an unreachable device: nothing listening there
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    res = hil(env, cwd, "train", CONFIG, "--device", nowhere, "--run-dir", "runs/nowhere",
              "--no-progress", *SMALL)  # fmt: skip
    line = one_error_line(res, "train")
    assert "nothing is listening" in line, line
    assert not (cwd / "runs/nowhere").exists()  # refused before anything was written

    # --- a bad --set is blamed on the --set, in one line
    res = hil(env, cwd, "train", CONFIG, "--set", "optim.lr=abc", "--run-dir", "runs/bad")
    line = one_error_line(res, "train")
    assert line.startswith("hil train: error: --set optim.lr=abc: optim.lr: "), line
