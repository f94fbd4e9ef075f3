"""Run directories made by real short runs, and a ``hil dashboard`` subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from hil.trainer.session import TrainRequest, train
from tests.trainer.conftest import SMALL

DASHBOARD_EXTRA = "needs the 'dashboard' extra: pip install 'pcm-hil[dashboard]'"
READY_TIMEOUT_S = 30.0
EPOCHS = 3


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory, jsb_path: Path) -> Path:
    """``soft`` (software) and ``chip`` (ideal simulator, lr 0.02): three short epochs each."""
    root = tmp_path_factory.mktemp("runs")
    small = (*SMALL, f"data.path={jsb_path}")
    train(TrainRequest(device="software", run_dir=root / "soft", epochs=EPOCHS, overrides=small))
    train(
        TrainRequest(
            device="sim://?preset=ideal&seed=0",
            run_dir=root / "chip",
            epochs=EPOCHS,
            overrides=(*small, "optim.lr=0.02"),
        )
    )
    return root


@pytest.fixture
def runs_copy(runs_root: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`runs_root` that a test may damage."""
    dest = tmp_path / "runs"
    shutil.copytree(runs_root, dest)
    return dest


class DashboardProcess:
    """``python -m hil dashboard --bind 127.0.0.1:0 ARGS``; ``url`` once it listens."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = [sys.executable, "-m", "hil", "dashboard", "--bind", "127.0.0.1:0", *args]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> DashboardProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(READY_TIMEOUT_S)
        if not line or not line[0].startswith("dashboard on "):
            self.__exit__()
            raise RuntimeError(f"hil dashboard did not start: {line!r}")
        self.url = line[0].split()[-1].rstrip("/")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
