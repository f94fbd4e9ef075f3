"""Crash-safe file writes for run data: atomic replace and fsync'ed appends.

A run directory must survive ``kill -9`` at any instant: every whole-file write goes to a
temporary file in the same directory, is fsync'ed, then renamed over the target (rename is
atomic on POSIX), and the directory is fsync'ed so the rename itself is durable. Line logs
(``metrics.jsonl``, ``events.jsonl``) are appended one complete line per write and fsync'ed;
a reader ignores a torn last line. The atomic write itself is the project's one helper,
:func:`drivers.fsio.atomic_write_bytes`, re-exported here.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivers.fsio import atomic_write_bytes

__all__ = [
    "append_jsonl",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_json",
    "dumps",
    "read_jsonl",
]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """JSON text with numpy scalars/arrays and paths converted."""
    return json.dumps(obj, default=_json_default, indent=indent, sort_keys=indent is not None)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    line = dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a torn (incomplete) last line is skipped."""
    if not Path(path).exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # torn write from a crash
            line = line.strip()
            if line:
                yield json.loads(line)


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save arrays to ``path`` (.npz) atomically."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    atomic_write_bytes(path, buf.getvalue())
