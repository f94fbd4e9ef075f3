"""The server's records in the state database: replies per identity, audit trail, wear.

All three write into the caller's transaction (:meth:`drivers.statedb.StateDB.transaction`)
so a request's records commit together with its journal row, before its reply is sent.

- :class:`ReplyRecords`: ``(identity, request_id) -> (verb, fingerprint, reply)``, at most
  ``capacity`` per identity (no client can evict another's records). An evicted id leaves
  a tombstone; a retry of it gets :class:`OutcomeUnknown`, never a second application.
- :class:`AuditLog`: one row per state-changing or reservation request, refused ones
  included: time (Unix s), identity, run id, verb, region, pulse count, outcome.
- :class:`WearLedger`: SET pulses and RESETs per device. Each ``apply_pulses`` stores its
  per-device counts and RESET mask (one ``wear`` row per request and region); ``reset``
  and ``program`` count one RESET per device of their region (program-and-verify RESETs
  the cells first) and their SET pulses per request only (the driver contract reports
  program's pulse total, not per device). Per-device totals are kept in memory, folded
  into ``wear_totals`` blobs every ``fold_every`` rows, and rebuilt at start.

Read API for tools such as ``hil health`` (see docs/ARCHITECTURE.md):
``WearLedger.device_totals(chip) -> (set_pulses, resets)`` int64 ``(rows, cols, 4)``,
``WearLedger.by_region(...)`` and ``AuditLog.query(...)``; offline,
``open_read_only(state_dir)`` gives a :class:`~drivers.statedb.StateDB` to build them on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers import InvalidRequest, OutcomeUnknown
from drivers.idempotency import REPORT_TYPES, Report
from drivers.statedb import (
    DB_NAME,
    StateCorrupt,
    StateDB,
    connect,
    digest,
    pack_arrays,
    unpack_arrays,
)
from protocols.messages import LeaseReleased, LeaseReply, ReserveReleased
from protocols.region import Region

Recorded = Report | LeaseReply | LeaseReleased | ReserveReleased
"""What a reply record holds: a state-changing verb's report or a lease verb's reply."""
RECORD_TYPES: dict[str, type[Recorded]] = {
    **REPORT_TYPES,
    "LeaseReply": LeaseReply,
    "LeaseReleased": LeaseReleased,
    "ReserveReleased": ReserveReleased,
}


class ReplyRecords:
    """Per-identity bounded reply records with tombstones for evicted ids."""

    def __init__(self, db: StateDB, capacity: int = 4096, tombstones: int = 100_000) -> None:
        if capacity < 1:
            raise InvalidRequest(f"reply record capacity {capacity} must be >= 1")
        self.db, self.capacity, self.tombstones = db, capacity, tombstones
        c = db.conn
        self._count = dict(c.execute("SELECT identity, count(*) FROM replies GROUP BY identity"))
        self._puts = 0

    def get(self, identity: str, request_id: str, verb: str, fp: str) -> Recorded | None:
        """The recorded reply, None if never seen; raises on a changed request or eviction."""
        row = self.db.conn.execute(
            "SELECT verb, fingerprint, reply FROM replies WHERE identity = ? AND request_id = ?",
            (identity, request_id),
        ).fetchone()
        if row is None:
            gone = self.db.conn.execute(
                "SELECT 1 FROM reply_tombstones WHERE identity = ? AND request_id = ?",
                (identity, request_id),
            ).fetchone()
            if gone is not None:
                raise OutcomeUnknown(
                    f"request {request_id!r} is older than this client's {self.capacity} "
                    f"kept reply records: it was received, but whether it was applied can no "
                    f"longer be told; read the region to find out, then use a fresh id"
                )
            return None
        old_verb, old_fp, text = row
        if old_verb != verb or old_fp != fp:
            raise InvalidRequest(
                f"request_id {request_id!r} was already used for a different {old_verb} "
                f"request; a retry must repeat the same request. Use a fresh id for a new one."
            )
        rec = json.loads(text)
        return RECORD_TYPES[rec["type"]].model_validate(rec["reply"])

    def put(self, identity: str, request_id: str, verb: str, fp: str, reply: Recorded) -> None:
        """Record a reply (in the current transaction, whose number it keeps)."""
        self._puts += 1
        text = json.dumps({"type": type(reply).__name__, "reply": reply.model_dump()})
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                (identity, request_id, self.db.txn, verb, fp, text),
            )
            n = self._count.get(identity, 0) + 1
            if n > self.capacity:
                old = c.execute(
                    "SELECT request_id, txn FROM replies WHERE identity = ? ORDER BY txn LIMIT ?",
                    (identity, n - self.capacity),
                ).fetchall()
                c.executemany(
                    "DELETE FROM replies WHERE identity = ? AND request_id = ?",
                    [(identity, rid) for rid, _ in old],
                )
                c.executemany(
                    "INSERT OR REPLACE INTO reply_tombstones VALUES (?, ?, ?)",
                    [(identity, rid, seq) for rid, seq in old],
                )
                n -= len(old)
                if self._puts % 1024 == 0:  # keep the newest tombstones per identity
                    c.execute(
                        "DELETE FROM reply_tombstones WHERE identity = ? AND txn < (SELECT "
                        "txn FROM reply_tombstones WHERE identity = ? ORDER BY txn DESC "
                        "LIMIT 1 OFFSET ?)",
                        (identity, identity, self.tombstones),
                    )
            self._count[identity] = n

    def count(self, identity: str) -> int:
        return self._count.get(identity, 0)


def _region_cols(region: Region | None) -> tuple[Any, ...]:
    if region is None:
        return (None, None, None, None, None)
    return (region.chip, region.row0, region.row1, region.col0, region.col1)


AUDIT_FIELDS = (
    "id time identity run_id verb chip row0 row1 col0 col1 pulses outcome request_id".split()
)


class AuditLog:
    """Append-only audit rows; :meth:`query` filters by time, identity and region."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def record(
        self,
        identity: str,
        run_id: str,
        verb: str,
        region: Region | None,
        pulses: int,
        outcome: str,
        request_id: str,
        now: float | None = None,
    ) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO audit(time, identity, run_id, verb, chip, row0, row1, col0, col1, "
                "pulses, outcome, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time() if now is None else now,
                    identity,
                    run_id,
                    verb,
                    *_region_cols(region),
                    int(pulses),
                    outcome,
                    request_id,
                ),
            )

    def query(
        self,
        *,
        since: float | None = None,
        identity: str | None = None,
        region: Region | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Rows oldest first; ``region`` keeps rows whose region overlaps it (or the whole
        device: verbs without a region, such as ``advance``)."""
        sql = f"SELECT {', '.join(AUDIT_FIELDS)} FROM audit WHERE 1"  # noqa: S608
        args: list[Any] = []
        if since is not None:
            sql, args = sql + " AND time >= ?", [*args, since]
        if identity is not None:
            sql, args = sql + " AND identity = ?", [*args, identity]
        if region is not None:
            sql += " AND (chip IS NULL OR (chip = ? AND row0 < ? AND ? < row1 AND col0 < ? AND ? < col1))"
            args += [region.chip, region.row1, region.row0, region.col1, region.col0]
        sql += " ORDER BY id LIMIT ?"
        rows = self.db.conn.execute(sql, [*args, limit]).fetchall()
        return [dict(zip(AUDIT_FIELDS, r, strict=True)) for r in rows]


@dataclass
class _Totals:
    set_pulses: np.ndarray
    resets: np.ndarray


class WearLedger:
    """SET pulses and RESETs per device, per chip of ``shape = (rows, cols, devices)``."""

    def __init__(self, db: StateDB, shape: tuple[int, int, int], fold_every: int = 256) -> None:
        self.db, self.shape, self.fold_every = db, shape, fold_every
        self._totals: dict[int, _Totals] = {}
        self._through = 0
        c = db.conn
        for chip, header, blob, dg, through in c.execute("SELECT * FROM wear_totals"):
            if digest(header, blob) != dg:
                raise StateCorrupt(f"wear totals of chip {chip} fail their digest")
            a = unpack_arrays(json.loads(header), bytes(blob), f"wear totals of chip {chip}")
            self._totals[chip] = _Totals(a["set_pulses"].copy(), a["resets"].copy())
            self._through = max(self._through, int(through))
        self._pending = 0
        for row in c.execute(
            "SELECT id, verb, chip, row0, row1, col0, col1, header, arrays, digest FROM wear "
            "WHERE id > ? ORDER BY id",
            (self._through,),
        ):
            self._apply_row(*row)
            self._pending += 1

    def _chip(self, chip: int) -> _Totals:
        if chip not in self._totals:
            z = np.zeros(self.shape, dtype=np.int64)
            self._totals[chip] = _Totals(z, z.copy())
        return self._totals[chip]

    def _apply_row(
        self,
        wid: int,
        verb: str,
        chip: int,
        r0: int,
        r1: int,
        c0: int,
        c1: int,
        header: str | None,
        blob: bytes | None,
        dg: str | None,
    ) -> None:
        t = self._chip(chip)
        if header is None:  # reset / program: one RESET per device of the region
            t.resets[r0:r1, c0:c1] += 1
            return
        if blob is None or digest(header, blob) != dg:
            raise StateCorrupt(f"wear record {wid} fails its digest")
        a = unpack_arrays(json.loads(header), bytes(blob), f"wear record {wid}")
        t.set_pulses[r0:r1, c0:c1] += a["counts"]
        if "reset_mask" in a:
            t.resets[r0:r1, c0:c1] += a["reset_mask"]

    def record(
        self,
        identity: str,
        run_id: str,
        request_id: str,
        verb: str,
        region: Region,
        set_pulses: int,
        resets: int,
        counts: np.ndarray | None = None,
        reset_mask: np.ndarray | None = None,
    ) -> None:
        """One wear row (in the current transaction); per-device arrays for apply_pulses."""
        header = blob = dg = None
        if counts is not None:
            c8 = counts.astype(np.uint8) if int(counts.max(initial=0)) <= 255 else counts
            specs, blob = pack_arrays({"counts": c8, "reset_mask": reset_mask})
            header = json.dumps(specs)
            dg = digest(header, blob)
        with self.db.transaction() as c:
            cur = c.execute(
                "INSERT INTO wear(time, identity, run_id, request_id, verb, chip, row0, row1, "
                "col0, col1, set_pulses, resets, header, arrays, digest) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    identity,
                    run_id,
                    request_id,
                    verb,
                    *_region_cols(region),
                    int(set_pulses),
                    int(resets),
                    header,
                    blob,
                    dg,
                ),
            )
            r = region
            wid = int(cur.lastrowid or 0)
            self._apply_row(wid, verb, r.chip, r.row0, r.row1, r.col0, r.col1, header, blob, dg)
            self._pending += 1
            if self._pending >= self.fold_every:
                self.fold()

    def fold(self) -> None:
        """Write the per-device totals and drop the folded rows' arrays (one transaction)."""
        with self.db.transaction() as c:
            last = int(c.execute("SELECT coalesce(max(id), 0) FROM wear").fetchone()[0])
            for chip, t in self._totals.items():
                specs, blob = pack_arrays({"set_pulses": t.set_pulses, "resets": t.resets})
                header = json.dumps(specs)
                c.execute(
                    "INSERT OR REPLACE INTO wear_totals VALUES (?, ?, ?, ?, ?)",
                    (chip, header, blob, digest(header, blob), last),
                )
            c.execute(
                "UPDATE wear SET header = NULL, arrays = NULL, digest = NULL WHERE id <= ? "
                "AND id > ? AND verb = 'apply_pulses'",
                (last, self._through),
            )
        self._through, self._pending = last, 0

    def device_totals(self, chip: int) -> tuple[np.ndarray, np.ndarray]:
        """``(set_pulses, resets)`` per device of ``chip``, int64 ``(rows, cols, devices)``."""
        t = self._chip(chip)
        return t.set_pulses.copy(), t.resets.copy()

    def by_region(self, region: Region | None = None) -> list[dict[str, Any]]:
        """SET pulses and RESETs summed per (chip, region) of the requests, most worn first."""
        sql = (
            "SELECT chip, row0, row1, col0, col1, count(*), sum(set_pulses), sum(resets) FROM wear"
        )
        args: list[Any] = []
        if region is not None:
            sql += " WHERE chip = ? AND row0 < ? AND ? < row1 AND col0 < ? AND ? < col1"
            args = [region.chip, region.row1, region.row0, region.col1, region.col0]
        sql += " GROUP BY chip, row0, row1, col0, col1 ORDER BY sum(set_pulses) DESC"
        keys = ("chip", "row0", "row1", "col0", "col1", "requests", "set_pulses", "resets")
        return [dict(zip(keys, r, strict=True)) for r in self.db.conn.execute(sql, args)]


class MemoryWear:
    """The per-device totals of :class:`WearLedger` without a database: the wear ledger of
    an in-process driver with nowhere to persist it (counts since the driver was opened)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self._totals: dict[int, _Totals] = {}

    def record(
        self,
        identity: str,
        run_id: str,
        request_id: str,
        verb: str,
        region: Region,
        set_pulses: int,
        resets: int,
        counts: np.ndarray | None = None,
        reset_mask: np.ndarray | None = None,
    ) -> None:
        """Same arguments as :meth:`WearLedger.record`."""
        if region.chip not in self._totals:
            z = np.zeros(self.shape, dtype=np.int64)
            self._totals[region.chip] = _Totals(z, z.copy())
        t, (rs, cs) = self._totals[region.chip], region.slices()
        if counts is None:  # reset / program: one RESET per device of the region
            t.resets[rs, cs] += 1
            return
        t.set_pulses[rs, cs] += counts
        if reset_mask is not None:
            t.resets[rs, cs] += reset_mask

    def device_totals(self, chip: int) -> tuple[np.ndarray, np.ndarray]:
        t = self._totals.get(chip)
        if t is None:
            z = np.zeros(self.shape, dtype=np.int64)
            return z, z.copy()
        return t.set_pulses.copy(), t.resets.copy()

    def fold(self) -> None:
        """Nothing to fold (no database)."""


def open_read_only(state_dir: str | Path) -> StateDB:
    """The state database of ``state_dir`` for reading (works while a server writes it)."""
    path = Path(state_dir) / DB_NAME
    if not path.is_file():
        raise InvalidRequest(f"{state_dir} holds no state database ({DB_NAME})")
    return StateDB(connect(path, read_only=True), path)


__all__ = [
    "AUDIT_FIELDS",
    "AuditLog",
    "MemoryWear",
    "OutcomeUnknown",
    "ReplyRecords",
    "WearLedger",
    "open_read_only",
]
