"""A run's status (running, stopped, failed, finished), derived from its directory alone.

Evidence:

1. The last run event in ``events.jsonl``, when it ends a run: ``finished`` (with
   ``summary.json``) means *finished*; ``interrupted`` (a Ctrl-C that wrote a checkpoint)
   means *stopped*; ``failed`` (or ``error``) means *failed*, with its message as the
   reason. (A trainer writes one of these last, just before it exits; a resume writes a
   ``resume`` event after it.)
2. Otherwise ``run.lock``: a process that trains the run holds an exclusive ``flock`` on
   it for its whole life (and writes its pid and host into it). The kernel drops the lock
   when the process ends, however it ends (``kill -9`` included), so a held lock means
   *running* and a left-over, unheld lock file means the trainer is gone without a final
   event: *failed* ("killed or crashed"). A run from before lock files (no ``run.lock``)
   cannot be told apart from a live one; it is *stopped* unless it finished.

``hil runs list`` and ``hil dashboard`` both call :func:`run_status`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hil.errors import HilError
from hil.fsio import read_jsonl

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "run.lock"
FAILED_EVENTS = frozenset({"failed", "error"})
"""Event names that record a run ending in an error."""


class RunStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    FINISHED = "finished"


@dataclass(frozen=True)
class StatusInfo:
    """A run's status, why, and the trainer's pid/host when the lock file names them."""

    status: RunStatus
    reason: str
    pid: int | None = None
    host: str | None = None


class RunBusy(HilError):
    """Another process is training this run directory."""


def _lock_owner(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def lock_held(run_path: Path) -> bool:
    """True when a live process holds ``RUN/run.lock`` (a non-blocking shared-lock probe)."""
    file = Path(run_path) / LOCK_FILE
    if fcntl is None or not file.exists():
        return False
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _last_event(run_path: Path) -> dict[str, Any] | None:
    last = None
    try:
        for rec in read_jsonl(run_path / "events.jsonl"):
            last = rec
    except (OSError, ValueError):  # a corrupt line: judge by what came before it
        pass
    return last


def run_status(run_path: Path) -> StatusInfo:
    """The status of the run in ``run_path`` (see the module docstring for the rules)."""
    run_path = Path(run_path)
    lock_file = run_path / LOCK_FILE
    owner = _lock_owner(lock_file) if lock_file.exists() else {}
    pid, host = owner.get("pid"), owner.get("host")
    last = _last_event(run_path)
    name = (last or {}).get("event")
    ended = name in FAILED_EVENTS or name in ("finished", "interrupted")
    if not ended and lock_held(run_path):
        return StatusInfo(RunStatus.RUNNING, f"trainer pid {pid} on {host}", pid, host)
    if name == "finished" and (run_path / "summary.json").is_file():
        return StatusInfo(RunStatus.FINISHED, "finished", pid, host)
    if name == "interrupted":
        in_epoch = last.get("in_epoch", (last.get("epoch") or 0) + 1) if last else None
        where = f"epoch {in_epoch} after batch {last.get('batch')}" if last else ""
        return StatusInfo(RunStatus.STOPPED, f"stopped by the operator at {where}", pid, host)
    if name in FAILED_EVENTS:
        msg = str(last.get("error") or last.get("msg") or "failed") if last else "failed"
        return StatusInfo(RunStatus.FAILED, msg, pid, host)
    if not lock_file.exists():
        if (run_path / "summary.json").is_file():
            return StatusInfo(RunStatus.FINISHED, "finished (no lock file)")
        return StatusInfo(RunStatus.STOPPED, "not finished; no lock file to tell if it runs")
    return StatusInfo(
        RunStatus.FAILED,
        f"trainer pid {pid} on {host} ended without a final event (killed or crashed)",
        pid,
        host,
    )


class RunLock:
    """Held by the process that trains a run: ``with RunLock(run_path): ...``.

    Refuses (:class:`RunBusy`) when another live process holds it. A status probe holds a
    shared lock for microseconds, so acquiring retries for up to ``wait_s``.
    """

    def __init__(self, run_path: Path, wait_s: float = 2.0) -> None:
        self.file = Path(run_path) / LOCK_FILE
        self.wait_s = wait_s
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if fcntl is None:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    owner = _lock_owner(self.file)
                    raise RunBusy(
                        f"{self.file.parent} is being trained by pid {owner.get('pid')} on "
                        f"{owner.get('host')}; wait for it to end (or stop it) first"
                    ) from None
                time.sleep(0.05)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
