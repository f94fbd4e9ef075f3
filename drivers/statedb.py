"""The server's durable state: one SQLite database, ``STATE_DIR/state.db``.

Standard-library :mod:`sqlite3`, ``journal_mode=WAL``, ``synchronous=FULL`` (a commit
returns once its WAL frames are fsync'ed), one writer process (``flock`` on
``STATE_DIR/LOCK``); readers such as ``hil audit STATE_DIR`` may open it read-only while
the server runs. Tables (schema version in ``PRAGMA user_version``, :data:`MIGRATIONS`):

==================  ==============================================================
``meta``            key/value facts (what created the database)
``snapshot``        the chips' state at the last compaction: one row (meta JSON with
                    the driver's reply record) plus ``snapshot_file`` rows naming one
                    ``.npz`` file per chip (``snapshot-GEN-NAME.npz`` beside the
                    database, written atomically), each with its BLAKE2b digest
``journal``         state-changing requests applied since the snapshot, in ``seq``
                    order: header JSON (verb, ids, times, reply, array specs) and the
                    arrays as one blob; dtype, shape and digest checked on the way back
``replies``         reply records per client identity (``reply_tombstones``: ids whose
                    record was evicted, answered "outcome unknown")
``reservations``,   run reservations and region leases
``leases``
``wear``,           the wear ledger: pulses per request and region (per-device arrays
``wear_totals``     until folded into per-chip totals), see :mod:`drivers.ledger`
``audit``           time, identity, run id, verb, region, pulse count, outcome
``sessions``        SHA-256 digests of session tokens and the identities they stand for
==================  ==============================================================

Writes happen in :meth:`StateDB.transaction` blocks; blocks nest (the outermost one
commits), so the server wraps a request's journal row, reply record, wear and audit rows
in one transaction and replies only after it committed. Each outermost transaction has a
number (:attr:`StateDB.txn`) stored with its journal and reply rows and with the
snapshot, so a salvage can tell which reply records the surviving chip state covers. Compaction
(:meth:`StateDB.write_snapshot`) replaces the snapshot and empties the journal in one
transaction; its files are written (atomically, :mod:`drivers.fsio`) before that
transaction and the previous generation's are deleted after it commits (files of an
uncommitted generation are deleted at the next open). Files beat blobs here: writing the
two chips (14.5 MiB) took 65 ms as files against 525 ms as blobs in one transaction
(``scripts/bench_rpc.py``, ``compaction_*_ms``). At open, ``PRAGMA integrity_check`` runs; a damaged database raises
:class:`StateCorrupt` (``hil serve`` prints it as one line); :mod:`drivers.salvage` copies
out what passes. :func:`fault_point` lets tests kill the process at named points.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from drivers import DeviceError
from drivers.fsio import atomic_write_bytes
from protocols.messages import DTYPES

DB_NAME = "state.db"
_NAME_OF_DTYPE = {np.dtype(v): k for k, v in DTYPES.items()}

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: chip state (snapshot + journal)
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE snapshot(id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER "
        "NOT NULL, txn INTEGER NOT NULL, created REAL NOT NULL, meta TEXT NOT NULL, "
        "digest TEXT NOT NULL)",
        "CREATE TABLE snapshot_file(name TEXT PRIMARY KEY, file TEXT NOT NULL, "
        "size INTEGER NOT NULL, digest TEXT NOT NULL)",
        "CREATE TABLE journal(seq INTEGER PRIMARY KEY, txn INTEGER NOT NULL, "
        "header TEXT NOT NULL, arrays BLOB NOT NULL, digest TEXT NOT NULL)",
    ),
    (  # 2: the server's records
        "CREATE TABLE replies(identity TEXT NOT NULL, request_id TEXT NOT NULL, "
        "txn INTEGER NOT NULL, verb TEXT NOT NULL, fingerprint TEXT NOT NULL, "
        "reply TEXT NOT NULL, PRIMARY KEY (identity, request_id))",
        "CREATE INDEX replies_by_txn ON replies(identity, txn)",
        "CREATE TABLE reply_tombstones(identity TEXT NOT NULL, request_id TEXT NOT NULL, "
        "txn INTEGER NOT NULL, PRIMARY KEY (identity, request_id))",
        "CREATE TABLE reservations(reservation_id TEXT PRIMARY KEY, identity TEXT NOT NULL, "
        "run_id TEXT NOT NULL, name TEXT NOT NULL, chip INTEGER NOT NULL, row0 INTEGER NOT "
        "NULL, row1 INTEGER NOT NULL, col0 INTEGER NOT NULL, col1 INTEGER NOT NULL, "
        "whole_chip INTEGER NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, "
        "UNIQUE (identity, run_id, name))",
        "CREATE TABLE leases(lease_id TEXT PRIMARY KEY, identity TEXT NOT NULL, "
        "request_id TEXT NOT NULL, chip INTEGER NOT NULL, row0 INTEGER NOT NULL, row1 "
        "INTEGER NOT NULL, col0 INTEGER NOT NULL, col1 INTEGER NOT NULL, mode TEXT NOT NULL, "
        "granted REAL NOT NULL)",
        "CREATE TABLE wear_totals(chip INTEGER PRIMARY KEY, header TEXT NOT NULL, "
        "arrays BLOB NOT NULL, digest TEXT NOT NULL, through INTEGER NOT NULL)",
        "CREATE TABLE wear(id INTEGER PRIMARY KEY, time REAL NOT NULL, identity TEXT NOT "
        "NULL, run_id TEXT NOT NULL, request_id TEXT NOT NULL, verb TEXT NOT NULL, chip "
        "INTEGER NOT NULL, row0 INTEGER NOT NULL, row1 INTEGER NOT NULL, col0 INTEGER NOT "
        "NULL, col1 INTEGER NOT NULL, set_pulses INTEGER NOT NULL, resets INTEGER NOT NULL, "
        "header TEXT, arrays BLOB, digest TEXT)",
        "CREATE TABLE audit(id INTEGER PRIMARY KEY, time REAL NOT NULL, identity TEXT NOT "
        "NULL, run_id TEXT NOT NULL, verb TEXT NOT NULL, chip INTEGER, row0 INTEGER, row1 "
        "INTEGER, col0 INTEGER, col1 INTEGER, pulses INTEGER NOT NULL, outcome TEXT NOT "
        "NULL, request_id TEXT NOT NULL)",
        "CREATE INDEX audit_by_time ON audit(time)",
        "CREATE INDEX audit_by_identity ON audit(identity, time)",
    ),
    (  # 3: client sessions (digests of the tokens handed out by hello)
        "CREATE TABLE sessions(token_hash TEXT PRIMARY KEY, identity TEXT NOT NULL UNIQUE, "
        "created REAL NOT NULL)",
    ),
    (  # 4: a reservation's run seed (its noise stream on a simulator)
        "ALTER TABLE reservations ADD COLUMN seed INTEGER",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StateCorrupt(DeviceError):
    """The state database is damaged (failed integrity check or a record's digest)."""


def fault_point(name: str) -> None:
    """Tests only: ``HIL_STATE_FAULT=name[:N]`` SIGKILLs this process the N-th time (default 1st)
    execution reaches ``name`` (``compaction``, ``migration``, ``commit``)."""
    spec = os.environ.get("HIL_STATE_FAULT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_HITS: dict[str, int] = {}


def digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


def pack_arrays(arrays: dict[str, np.ndarray | None]) -> tuple[list[list[Any]], bytes]:
    """``(specs, blob)``: ``specs = [[name, dtype, shape], ...]``, blob = raw LE C-order bytes."""
    specs, bufs = [], []
    for name, arr in arrays.items():
        if arr is None:
            continue
        a = np.asarray(arr)
        dname = _NAME_OF_DTYPE.get(
            a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        )
        if dname is None:
            raise DeviceError(f"state db cannot store dtype {a.dtype} of array {name!r}")
        a = np.ascontiguousarray(a, dtype=DTYPES[dname])
        specs.append([name, dname, list(a.shape)])
        bufs.append(a.tobytes())
    return specs, b"".join(bufs)


def unpack_arrays(specs: list[list[Any]], blob: bytes, where: str) -> dict[str, np.ndarray]:
    """Arrays back from :func:`pack_arrays`, dtype whitelisted and sizes checked."""
    out, pos = {}, 0
    for name, dname, shape in specs:
        if dname not in DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise StateCorrupt(f"{where}: array {name!r} has a bad dtype/shape {dname} {shape}")
        dtype = np.dtype(DTYPES[dname])
        count = math.prod(shape)
        end = pos + count * dtype.itemsize
        if end > len(blob):
            raise StateCorrupt(f"{where}: array {name!r} runs past its blob")
        out[name] = np.frombuffer(blob, dtype, count, pos).reshape(shape)
        pos = end
    if pos != len(blob):
        raise StateCorrupt(f"{where}: blob holds {len(blob) - pos} bytes beyond its arrays")
    return out


class StateDB:
    """One connection to ``state.db`` (or ``:memory:``). Not thread-safe: one thread owns it."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None, lock: Any = None) -> None:
        self.conn = conn
        self.path = path
        self._lock = lock
        self._depth = 0
        self.txn = 0
        self._after_commit: list[Any] = []
        self._after_rollback: list[Any] = []

    # ------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, state_dir: str | Path, *, migrate_to: int = SCHEMA_VERSION, fsync: bool = True
    ) -> StateDB:
        """Open (creating) ``state_dir/state.db`` for writing: lock, check, migrate.

        ``fsync=False`` (benchmarks only) sets ``synchronous=OFF``: commits are not durable.
        """
        root = Path(state_dir)
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / "LOCK", "a+b")  # noqa: SIM115 - closed in close()
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DeviceError(
                f"state dir {root} is in use by another process (LOCK held); "
                f"stop that server or pick another --state-dir"
            ) from None
        try:
            path = root / DB_NAME
            conn = connect(path)
            if not fsync:
                conn.execute("PRAGMA synchronous = OFF")
            db = cls(conn, path, lock)
            check_integrity(conn, path)
            db._migrate(migrate_to)
            db._remove_stray_snapshot_files()
            return db
        except BaseException:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            lock.close()
            raise

    @classmethod
    def memory(cls) -> StateDB:
        """An in-memory database (no ``--state-dir``): same tables, nothing durable."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db = cls(conn, None)
        db._migrate(SCHEMA_VERSION)
        return db

    @property
    def durable(self) -> bool:
        return self.path is not None

    def _migrate(self, target: int) -> None:
        version = self.version()
        if version > SCHEMA_VERSION:
            raise DeviceError(
                f"{self.path} has schema version {version}, newer than this pcm-hil "
                f"({SCHEMA_VERSION}); upgrade pcm-hil"
            )
        for v in range(version + 1, target + 1):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for i, sql in enumerate(MIGRATIONS[v - 1]):
                    self.conn.execute(sql)
                    if i == 0:
                        fault_point("migration")
                self.conn.execute(f"PRAGMA user_version = {v}")
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        self.txn = self._last_txn()

    def _last_txn(self) -> int:
        q = [
            "SELECT coalesce(max(txn), 0) FROM snapshot",
            "SELECT coalesce(max(txn), 0) FROM journal",
        ]
        if self.version() >= 2:
            q.append("SELECT coalesce(max(txn), 0) FROM replies")
        return max(int(self.conn.execute(sql).fetchone()[0]) for sql in q) if self.version() else 0

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self._lock is not None and not self._lock.closed:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()

    # ------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested blocks join the outermost, which commits."""
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
            self.txn += 1
        self._depth += 1
        try:
            yield self.conn
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._run_hooks(self._after_rollback)
            raise
        self._depth -= 1
        if self._depth == 0:
            fault_point("commit")
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self._run_hooks(self._after_rollback)
                raise
            self._run_hooks(self._after_commit)

    def _run_hooks(self, hooks: list[Any]) -> None:
        todo = list(hooks)
        self._after_commit.clear()
        self._after_rollback.clear()
        for fn in todo:
            fn()

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------ chip state
    def append_journal(self, header: dict[str, Any], arrays: dict[str, Any]) -> int:
        """Add one journal record (in the current transaction, or its own); returns its size."""
        specs, blob = pack_arrays(arrays)
        text = json.dumps({**header, "arrays": specs})
        with self.transaction() as c:
            c.execute(
                "INSERT INTO journal(txn, header, arrays, digest) VALUES (?, ?, ?, ?)",
                (self.txn, text, blob, digest(text, blob)),
            )
        return len(text) + len(blob)

    def journal(self) -> Iterator[tuple[int, dict[str, Any], dict[str, np.ndarray]]]:
        """``(seq, header, arrays)`` in order; :class:`StateCorrupt` names a bad record."""
        for seq, text, blob, dg in self.conn.execute(
            "SELECT seq, header, arrays, digest FROM journal ORDER BY seq"
        ):
            yield seq, *decode_journal_row(seq, text, blob, dg)

    def journal_size(self) -> tuple[int, int]:
        """``(records, bytes)`` of the journal."""
        n, nbytes = self.conn.execute(
            "SELECT count(*), coalesce(sum(length(header) + length(arrays)), 0) FROM journal"
        ).fetchone()
        return int(n), int(nbytes)

    def _snapshot_path(self, gen: int, name: str) -> Path:
        assert self.path is not None, "snapshots need a state dir"
        return self.path.parent / f"snapshot-{gen:06d}-{name}.npz"

    def _live_snapshot_files(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT file FROM snapshot_file")}

    def _remove_stray_snapshot_files(self, keep: set[str] | None = None) -> None:
        """Delete snapshot files the database does not name (old or uncommitted ones)."""
        if self.path is None:
            return
        keep = self._live_snapshot_files() if keep is None else keep
        for f in self.path.parent.glob("snapshot-*.npz"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def write_snapshot(self, meta: dict[str, Any], blobs: dict[str, bytes]) -> int:
        """Compaction: record a new snapshot and empty the journal, in one transaction.

        The files are written first; the previous generation's are deleted once the
        outermost transaction commits (or the new ones if it rolls back)."""
        text = json.dumps(meta)
        row = self.conn.execute("SELECT generation FROM snapshot WHERE id = 1").fetchone()
        gen = 1 if row is None else int(row[0]) + 1
        files = {name: self._snapshot_path(gen, name) for name in blobs}
        for name, data in blobs.items():
            atomic_write_bytes(files[name], data)
        new = {f.name for f in files.values()}
        with self.transaction() as c:
            self._after_commit.append(lambda: self._remove_stray_snapshot_files(new))
            self._after_rollback.append(lambda: _unlink_all(files.values()))
            c.execute("DELETE FROM snapshot_file")
            for name, data in blobs.items():
                c.execute(
                    "INSERT INTO snapshot_file(name, file, size, digest) VALUES (?, ?, ?, ?)",
                    (name, files[name].name, len(data), digest(data)),
                )
            c.execute(
                "INSERT OR REPLACE INTO snapshot(id, generation, txn, created, meta, digest) "
                "VALUES (1, ?, ?, ?, ?, ?)",
                (gen, self.txn, time.time(), text, digest(text)),
            )
            c.execute("DELETE FROM journal")
            fault_point("compaction")
        return gen

    def read_snapshot(self) -> tuple[int, dict[str, Any], dict[str, bytes]] | None:
        """``(generation, meta, blobs)`` of the live snapshot, digests checked; None if none."""
        row = self.conn.execute("SELECT generation, meta, digest FROM snapshot").fetchone()
        if row is None:
            return None
        gen, text, dg = row
        if digest(text) != dg:
            raise StateCorrupt(f"{self.path}: snapshot {gen} metadata fails its digest")
        blobs = {}
        for name, file, bdg in self.conn.execute("SELECT name, file, digest FROM snapshot_file"):
            assert self.path is not None
            blobs[name] = read_snapshot_file(self.path.parent / file, bdg, gen)
        return int(gen), json.loads(text), blobs


def _unlink_all(paths: Any) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def read_snapshot_file(path: Path, expected_digest: str, gen: int) -> bytes:
    """The bytes of one snapshot file, checked against its digest."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StateCorrupt(f"snapshot {gen} file {path} cannot be read ({exc})") from None
    if digest(data) != expected_digest:
        raise StateCorrupt(f"snapshot {gen} file {path} fails its digest (damaged on disk)")
    return data


def decode_journal_row(
    seq: int, text: str, blob: bytes, dg: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    where = f"journal record {seq}"
    if digest(text, blob) != dg:
        raise StateCorrupt(f"{where} fails its digest (damaged on disk)")
    try:
        header = json.loads(text)
        specs = header.pop("arrays")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StateCorrupt(f"{where}: unreadable header ({exc})") from None
    return header, unpack_arrays(specs, bytes(blob), where)


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` (or read-only)."""
    try:
        if read_only:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.DatabaseError as exc:
        raise StateCorrupt(
            f"state database {path} cannot be opened ({exc}); 'hil serve --salvage' copies "
            f"out what is readable"
        ) from None
    return conn


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA integrity_check``; raises :class:`StateCorrupt` with the first problem."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        raise StateCorrupt(
            f"state database {path} is damaged ({rows[0]}; {len(rows)} problem(s)); "
            f"'hil serve --salvage' copies out what passes the check and reports what is lost"
        )


__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StateCorrupt",
    "StateDB",
    "check_integrity",
    "connect",
    "digest",
    "fault_point",
    "pack_arrays",
    "read_snapshot_file",
    "unpack_arrays",
]
