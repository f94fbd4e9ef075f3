"""The atomic-write helper for whole files of ``drivers`` (state db snapshots, keys).

``atomic_write_bytes(path, data)``: a temporary file in the same directory is written,
flushed and fsync'ed, renamed over ``path`` (atomic on POSIX), then the directory is
fsync'ed so the rename itself is durable. A crash at any instant leaves either the old
or the new file, never a torn one. Two twins exist on purpose, for the layer rules:
the simulator's for ``Chip.save`` (``simulator`` may import nothing from ``drivers``) and
``hil/fsio.py`` for run directories (``hil.tasks`` writes through it and may import nothing
of ``drivers``, not even indirectly). A change to one is a change to all three.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, making renames and creations inside it durable."""
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


def atomic_write_bytes(
    path: str | Path, data: bytes, before_replace: Callable[[], None] | None = None
) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir).

    ``before_replace`` runs between the fsync'ed temp file and the rename (fault points)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


__all__ = ["atomic_write_bytes", "fsync_dir"]
