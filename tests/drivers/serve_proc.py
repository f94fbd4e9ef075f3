"""Start and stop a real ``hil serve`` subprocess for system tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.procs import readline_within

READY_TIMEOUT_S = 30.0


class ServeProcess:
    """``python -m hil serve URL --bind ENDPOINT [extra...]``; ``endpoint`` once ready."""

    def __init__(
        self,
        url: str,
        bind: str,
        extra: Sequence[str] = (),
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.args = [
            sys.executable,
            "-m",
            "hil",
            "--log-level",
            "info",
            "--log-json",
            "serve",
            url,
            "--bind",
            bind,
            *extra,
        ]
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def start(self) -> ServeProcess:
        stderr = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        try:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
            )
        finally:
            if self.log_path:
                stderr.close()  # type: ignore[union-attr]
        line = readline_within(self.proc.stdout, READY_TIMEOUT_S)
        if not line.startswith("serving on "):
            self.kill()
            log = self.log_path.read_text()[-2000:] if self.log_path else ""
            raise RuntimeError(f"hil serve did not start: {line!r}\n{log}")
        self.endpoint = line.split()[-1]
        return self

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is flushed or saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (graceful) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
            self._close_pipe()
            return code
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.terminate()
        finally:
            self.kill()


def wait_for(predicate, timeout_s: float = 10.0, step_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
