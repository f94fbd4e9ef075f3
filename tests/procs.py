"""Bounded waits on subprocess pipes: a test never blocks without a deadline."""

from __future__ import annotations

import threading
from typing import IO


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
