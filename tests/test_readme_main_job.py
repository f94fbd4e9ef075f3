"""The README's main-job command reproduces the README's figure offline on a fresh machine.

It runs the command's ``hil demo`` part exactly as the README writes it, in a subprocess
with no ``HIL_DATA_DIR``, an empty user cache, no proxy, and a download URL that fails
fast (a closed loopback port): the demo must train on the standard split shipped in the
package, say so and that its number is comparable to published ones, and end at the test
NLL the README states. (The ``pip install`` part is what ``.ci/run`` does beforehand.)
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


def readme_demo_nll() -> float:
    """The ``test NLL ≈ X`` the README's ``hil demo`` section promises."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("### `hil demo`") :]
    return float(re.search(r"test NLL ≈ (\d+\.\d+)", section).group(1))  # type: ignore[union-attr]


@pytest.mark.timeout(900)  # its subprocesses have their own, longer bounds
@pytest.mark.slow
def test_main_job_offline_reproduces_the_readme_figure(tmp_path: Path) -> None:
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
    # it says which data it used, and that the number is comparable to published ones
    assert "standard split" in res.stdout and "copy shipped in the package" in res.stdout
    assert "test NLL comparable to published numbers" in res.stdout
    run_dir = Path(re.search(r"run (\S+): ", res.stdout).group(1))  # type: ignore[union-attr]
    if not run_dir.is_absolute():
        run_dir = tmp_path / run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data_source"].startswith("jsb-standard:")
    assert summary["comparable_to_published"] is True
    assert summary["epochs"] == 3 and summary["pulses"] > 0
    assert summary["test_nll"] == pytest.approx(readme_demo_nll(), abs=0.05)
    assert not (tmp_path / "cache").exists()  # nothing built, nothing downloaded
    assert (run_dir / "report.html").is_file()
