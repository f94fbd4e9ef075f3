"""Crash-safe file writes for run data: atomic replace and fsync'ed appends.

A run directory must survive ``kill -9`` at any instant: every whole-file write goes to a
temporary file in the same directory, is fsync'ed, then renamed over the target (rename is
atomic on POSIX), and the directory is fsync'ed so the rename itself is durable. Line logs
(``metrics.jsonl``, ``events.jsonl``) are appended one complete line per write and fsync'ed;
a reader ignores a torn last line.

The atomic write and ``FILE_MODE`` are a deliberate twin of ``drivers/fsio.py``:
``hil.tasks`` writes through this module and may import nothing of ``drivers``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hil.faults import fault_point


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""Mode of every file written here: what ``open()`` would create under the process's umask
(read at import), not ``mkstemp``'s private 0600, so all files of a directory (run files,
logs, reports, snapshots) get one consistent mode."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point("fsio.temp_written")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
    """Append one JSON line and fsync it; a torn last line (a crash mid-append) is cut off
    first, so it cannot glue itself to the new line."""
    line = dumps(record) + "\n"
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


TEMP_GLOB = ".*.tmp"
"""Names of what an interrupted write leaves behind: the temp files of
:func:`atomic_write_bytes` and the temp folders of a chip snapshot being written."""


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the leftovers of interrupted writes in ``folder`` (files and folders named
    :data:`TEMP_GLOB`); returns them."""
    stale = sorted(Path(folder).glob(TEMP_GLOB)) if Path(folder).is_dir() else []
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


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
