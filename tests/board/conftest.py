"""Fixtures that start the real board emulator (``hil board-emulator``) as a subprocess.

``emulator(...)`` starts one on a pty (default) or a free TCP port and returns its address;
``emulator.stop(address)`` stops one early; every process is terminated at teardown. ``setup_file(port, ...)`` writes a lab set-up
YAML for it (VISA on the shipped pyvisa-sim instruments).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.procs import readline_within

START_TIMEOUT_S = 30.0


class Emulator:
    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil", "--log-level", "warning", "board-emulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = readline_within(self.proc.stdout, START_TIMEOUT_S).strip()
        if not line:
            self.proc.kill()  # ended, so reading its stderr cannot block
            self.proc.wait(timeout=10)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"board emulator did not start: {err}")
        self.address = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - defensive
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def emulator() -> Iterator[Callable[..., str]]:
    started: list[Emulator] = []

    def start(
        *,
        tcp: bool = False,
        tcp_port: int | None = None,
        preset: str = "hermes",
        seed: int = 0,
        fault_rate: float = 0.0,
        faults: str | None = None,
        firmware: str | None = None,
        state_dir: Path | None = None,
        clock: str | None = None,
    ) -> str:
        args = ["--tcp", str(tcp_port or 0)] if tcp or tcp_port else ["--pty"]
        if clock is not None:
            args += ["--clock", clock]
        if state_dir is not None:
            args += ["--state-dir", str(state_dir)]
        args += ["--preset", preset, "--seed", str(seed), "--fault-rate", str(fault_rate)]
        if faults:
            args += ["--faults", faults]
        if firmware:
            args += ["--firmware", firmware]
        emu = Emulator(args)
        started.append(emu)
        return emu.address

    def stop(address: str) -> None:
        """Stop (SIGTERM) the emulator serving ``address`` and wait for it to exit."""
        for emu in started:
            if emu.address == address:
                emu.stop()

    start.stop = stop  # type: ignore[attr-defined]
    start.started = started  # type: ignore[attr-defined]
    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def setup_file(tmp_path: Path) -> Callable[..., Path]:
    def write(port: str, name: str = "lab.yaml", **sections: dict[str, Any]) -> Path:
        data: dict[str, Any] = {
            "link": {"port": port, "timeout_s": 0.5, "retries": 3},
            "board": {"chip_ids": [0, 1], "firmware": ["1.2", "1.3", "1.4"]},
            "visa": {"backend": "@sim"},
        }
        for key, values in sections.items():
            data.setdefault(key, {}).update(values)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write
