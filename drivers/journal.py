"""Crash-safe persistence for drivers: snapshot generations plus an fsync'ed write-ahead journal.

Layout of a state directory::

    CURRENT            text: the live generation N (replaced atomically)
    snap-N/            the snapshot of generation N (written by the driver)
    journal-N.log      state-changing requests applied since snap-N, in order
    LOCK               flock'ed by the one process using the directory

A journal record is ``[u32 length][u32 crc32][payload]`` with ``payload =
[u32 header_len][header_json][raw array bytes...]``; the header lists each array's
name, dtype (whitelisted), shape and byte count. Every append is flushed and fsync'ed
before the driver replies, so a reply a client saw is durable. A crash mid-append leaves
a torn tail record, detected by the length/CRC check and truncated on recovery.

Compaction writes ``snap-(N+1)``, an empty ``journal-(N+1).log``, fsyncs them, then
replaces ``CURRENT``; a crash at any point leaves either generation N or N+1 complete.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import structlog

from drivers import DeviceError
from protocols.messages import DTYPES

log = structlog.get_logger(__name__)

_REC = struct.Struct("<II")
_HDR = struct.Struct("<I")
_NAME_OF_DTYPE = {np.dtype(v): k for k, v in DTYPES.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_record(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """One journal record (length, CRC, header JSON, raw little-endian arrays)."""
    specs, bufs = [], []
    for name, arr in arrays.items():
        a = np.require(arr, requirements="C")
        dname = _NAME_OF_DTYPE.get(
            a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        )
        if dname is None:
            raise DeviceError(f"journal cannot store dtype {a.dtype} of array {name!r}")
        a = a.astype(DTYPES[dname], copy=False)
        specs.append([name, dname, list(a.shape)])
        bufs.append(a.tobytes())
    head = json.dumps({**header, "arrays": specs}).encode()
    payload = b"".join([_HDR.pack(len(head)), head, *bufs])
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    (hlen,) = _HDR.unpack_from(payload)
    header = json.loads(payload[_HDR.size : _HDR.size + hlen])
    pos = _HDR.size + hlen
    arrays = {}
    for name, dname, shape in header.pop("arrays"):
        dtype = np.dtype(DTYPES[dname])
        n = math.prod(shape) * dtype.itemsize
        arrays[name] = np.frombuffer(payload, dtype, math.prod(shape), pos).reshape(shape)
        pos += n
    if pos != len(payload):
        raise ValueError("record length does not match its arrays")
    return header, arrays


def read_journal(path: Path) -> Iterator[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Yield the intact records of ``path``; truncate a torn or corrupt tail in place."""
    if not path.exists():
        return
    with open(path, "r+b") as fh:
        good = 0
        while True:
            head = fh.read(_REC.size)
            if not head:
                break
            try:
                if len(head) < _REC.size:
                    raise ValueError("short record header")
                length, crc = _REC.unpack(head)
                payload = fh.read(length)
                if len(payload) != length or zlib.crc32(payload) != crc:
                    raise ValueError("torn or corrupt record")
                record = _decode_payload(payload)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
                log.warning("journal_tail_truncated", path=str(path), offset=good, reason=str(exc))
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
                break
            good = fh.tell()
            yield record


class Journal:
    """Append-only record file; :meth:`append` returns once the record is on disk."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._fh: BinaryIO | None = open(path, "ab")  # noqa: SIM115 - closed in close()
        self.records = 0
        self.nbytes = path.stat().st_size if path.exists() else 0

    def append(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if self._fh is None:
            raise DeviceError(f"journal {self.path} is closed")
        record = encode_record(header, arrays)
        self._fh.write(record)
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.records += 1
        self.nbytes += len(record)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class StateDir:
    """Generations of snapshot + journal in one directory, owned by one process (flock)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / "LOCK", "a+b")  # noqa: SIM115 - closed in close()
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DeviceError(
                f"state dir {self.root} is in use by another process (LOCK held); "
                f"stop that server or pick another --state-dir"
            ) from None

    def current(self) -> int | None:
        """The live generation, or None for a fresh directory."""
        f = self.root / "CURRENT"
        if not f.exists():
            return None
        try:
            return int(f.read_text().strip())
        except ValueError:
            raise DeviceError(f"{f} is corrupt: expected a generation number") from None

    def snapshot_dir(self, gen: int) -> Path:
        return self.root / f"snap-{gen:06d}"

    def journal_path(self, gen: int) -> Path:
        return self.root / f"journal-{gen:06d}.log"

    def commit(self, gen: int) -> None:
        """Make ``gen`` live: its snapshot dir and journal must be complete and fsync'ed."""
        self.journal_path(gen).touch()
        _fsync_dir(self.snapshot_dir(gen))
        tmp = self.root / "CURRENT.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{gen}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / "CURRENT")
        _fsync_dir(self.root)
        for old in self.root.glob("snap-*"):
            if old.name != self.snapshot_dir(gen).name:
                shutil.rmtree(old, ignore_errors=True)
        for old in self.root.glob("journal-*.log"):
            if old.name != self.journal_path(gen).name:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
