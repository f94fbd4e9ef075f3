"""The README's main-job command works offline on a fresh machine (issue: embedded data).

It runs the command's ``hil demo`` part exactly as the README writes it, in a subprocess
with no ``HIL_DATA_DIR``, an empty user cache, no proxy, and a download URL that fails
fast (a closed loopback port): the demo must build the music21 chorales, say so, and
finish a training run. (The ``pip install`` part is what ``.ci/run`` does beforehand.)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def readme_command(marker: str) -> str:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    i = lines.index(f"<!-- {marker} -->")
    assert lines[i + 1].startswith("```")
    return lines[i + 2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(900)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
def test_main_job_runs_offline_on_the_built_chorales(tmp_path: Path) -> None:
    pytest.importorskip("music21")
    command = readme_command("main-command")
    assert "pip install" in command and "hil demo" in command
    demo = shlex.split(command.split("&&")[-1])
    assert demo[0] == "hil"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HIL_DATA_DIR", "HIL_OFFLINE") and "proxy" not in k.lower()
    }
    env.update(
        HIL_CACHE_DIR=str(tmp_path / "cache"),
        HIL_JSB_URL=f"http://127.0.0.1:{_closed_port()}/JSB%20Chorales.pickle",
    )
    res = subprocess.run(
        [sys.executable, "-m", "hil", *demo[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "music21-chorales:" in res.stdout  # it says which data it used
    run_dir = Path(re.search(r"run (\S+): ", res.stdout).group(1))  # type: ignore[union-attr]
    if not run_dir.is_absolute():
        run_dir = tmp_path / run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data_source"].startswith("music21-chorales:")
    assert summary["comparable_to_published"] is False
    assert summary["epochs"] == 3 and summary["pulses"] > 0
    assert (run_dir / "report.html").is_file()
