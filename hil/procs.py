"""Process helpers shared by scripts and tests: a real ``hil serve`` subprocess, and a
deadline-bound wait.

:class:`ServeProcess` starts ``python -m hil serve URL --bind ENDPOINT`` and reads the
endpoint it bound from its first stdout line (``serving on ENDPOINT``), within
:data:`READY_TIMEOUT_S`; it stops the server with SIGTERM (graceful) or SIGKILL (a crash).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

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
        self.env = env or {}
        self.log_path = log_path
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


def readline_within(stream: IO[str] | None, timeout_s: float) -> str:
    """The next line of ``stream``, or ``""`` if none arrives within ``timeout_s``.

    The read runs in a daemon thread; on timeout that thread is abandoned (it ends when
    the caller kills the process and its pipe closes)."""
    if stream is None:
        return ""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return line[0] if line else ""


def wait_for(
    predicate: Callable[[], object], timeout_s: float = 10.0, step_s: float = 0.05
) -> bool:
    """Poll ``predicate`` every ``step_s`` until it is true or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
