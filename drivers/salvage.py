"""``hil serve --salvage``: copy what passes the checks out of a damaged state database.

Every table of :data:`drivers.statedb.MIGRATIONS` is read row by row (in rowid order,
stepping over rows SQLite cannot read); rows with a digest (snapshot, snapshot files,
journal, wear) must match it. What is kept must be *provable*:

- the chip state is the snapshot plus the journal up to its first missing or damaged
  record; later journal records depend on that one and are dropped too. Without a whole
  snapshot the chip state is lost and the journal with it (the chips start afresh);
- a reply record stays only if the chip state kept covers it (its transaction number is
  at most the snapshot's, or a kept journal record has it); the others are dropped and
  named, so a retry of such a request is applied again instead of being answered with a
  reply for pulses the chips no longer hold;
- audit, wear, leases, reservations and sessions keep every readable row.

The damaged file is kept beside it as ``state.db.damaged-<UTC time>``; the report says
what was kept and lost per table.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from drivers import InvalidRequest
from drivers.fsio import fsync_dir
from drivers.statedb import (
    DB_NAME,
    SCHEMA_VERSION,
    StateCorrupt,
    StateDB,
    connect,
    digest,
    read_snapshot_file,
)

TABLES = (
    "meta",
    "snapshot",
    "snapshot_file",
    "journal",
    "replies",
    "reply_tombstones",
    "reservations",
    "leases",
    "wear_totals",
    "wear",
    "audit",
    "sessions",
)
MAX_UNREADABLE_RUN = 2000  # consecutive unreadable rowids after which a table is given up


def _read_rows(src: sqlite3.Connection, table: str) -> tuple[list[tuple[Any, ...]], int, bool]:
    """``(rows, unreadable, gave_up)``: readable rows (rowid first) in rowid order."""
    rows: list[tuple[Any, ...]] = []
    unreadable, last, run = 0, 0, 0
    try:
        top = src.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0  # noqa: S608
    except sqlite3.DatabaseError:
        top = None
    while True:
        try:
            batch = src.execute(
                f"SELECT rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 256",  # noqa: S608
                (last,),
            ).fetchall()
        except sqlite3.DatabaseError:
            batch = None
        if batch is not None:
            if not batch:
                break
            rows += batch
            last, run = batch[-1][0], 0
            continue
        last += 1  # step over one rowid that cannot be read
        try:
            one = src.execute(
                f"SELECT rowid, * FROM {table} WHERE rowid = ?",  # noqa: S608
                (last,),
            ).fetchall()
            rows += one
            run = 0
        except sqlite3.DatabaseError:
            unreadable += 1
            run += 1
        if (top is not None and last >= top) or run >= MAX_UNREADABLE_RUN:
            return rows, unreadable, top is None
    return rows, unreadable, False


def _digest_ok(table: str, row: tuple[Any, ...], root: Path) -> bool:
    if table == "snapshot":  # rowid, id, generation, txn, created, meta, digest
        return digest(row[5]) == row[6]
    if table == "snapshot_file":  # rowid, name, file, size, digest
        try:
            read_snapshot_file(root / row[2], row[4], 0)
        except StateCorrupt:
            return False
        return True
    if table == "journal":  # rowid, seq, txn, header, arrays, digest
        return digest(row[3], bytes(row[4])) == row[5]
    if table == "wear_totals":  # rowid, chip, header, arrays, digest, through
        return digest(row[2], bytes(row[3])) == row[4]
    if table == "wear" and row[14] is not None:  # ..., header, arrays, digest
        return digest(row[14], bytes(row[15])) == row[16]
    return True


def salvage(state_dir: str | Path) -> dict[str, Any]:
    """Replace ``state_dir/state.db`` by what passes the checks; returns the report."""
    root = Path(state_dir)
    path = root / DB_NAME
    if not path.is_file():
        raise InvalidRequest(f"--salvage: {root} holds no state database ({DB_NAME})")
    lock = open(root / "LOCK", "a+b")  # noqa: SIM115 - closed below
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise InvalidRequest(f"--salvage: {root} is in use by a running server") from None
    try:
        return _salvage(root, path)
    finally:
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        lock.close()


def _salvage(root: Path, path: Path) -> dict[str, Any]:
    src = sqlite3.connect(str(path), isolation_level=None)
    kept: dict[str, list[tuple[Any, ...]]] = {}
    damaged_journal: list[tuple[Any, ...]] = []
    report: dict[str, Any] = {"tables": {}, "dropped_replies": [], "dropped_journal": []}
    for table in TABLES:
        try:
            rows, unreadable, gave_up = _read_rows(src, table)
        except sqlite3.DatabaseError:
            rows, unreadable, gave_up = [], 0, True
        good = [r for r in rows if _digest_ok(table, r, root)]
        kept[table] = good
        if table == "journal":
            damaged_journal = [r for r in rows if not _digest_ok(table, r, root)]
        report["tables"][table] = {
            "kept": len(good),
            "lost": None if gave_up else unreadable + len(rows) - len(good),
            "unreadable_table": gave_up,
        }
    src.close()
    # the chip state: a whole snapshot, then the journal records 1, 2, ... up to a gap
    tables = report["tables"]
    whole = bool(kept["snapshot"]) and not any(
        tables[t]["lost"] or tables[t]["unreadable_table"] for t in ("snapshot", "snapshot_file")
    )
    journal = kept["journal"] if whole else []
    cut = next((i for i, row in enumerate(journal) if row[1] != i + 1), len(journal))
    dropped = kept["journal"][cut:] if whole else kept["journal"]
    dropped = sorted([*dropped, *damaged_journal], key=lambda row: row[1])
    report["dropped_journal"] = [_rid(row) for row in dropped]
    kept["journal"] = journal[:cut]
    lost_any = tables["journal"]["lost"] or tables["journal"]["unreadable_table"] or dropped
    if not whole:
        kept["snapshot"], kept["snapshot_file"] = [], []
        report["chip_state"] = "lost: no whole snapshot, the chips start afresh"
    elif lost_any:
        report["chip_state"] = (
            f"snapshot {kept['snapshot'][0][2]} plus journal records 1..{cut}; acknowledged "
            f"requests after those are lost"
        )
    else:
        report["chip_state"] = "kept whole"
    snap = kept["snapshot"]
    journal = kept["journal"]
    covered_txn = snap[0][3] if snap else 0
    journal_txns = {r[2] for r in journal}
    replies = []
    for row in kept["replies"]:  # rowid, identity, request_id, txn, verb, fp, reply
        if row[3] <= covered_txn or row[3] in journal_txns:
            replies.append(row)
        else:
            report["dropped_replies"].append(f"{row[1]}/{row[2]}")
    kept["replies"] = replies
    _write(root, path, kept, report)
    return report


def _rid(row: tuple[Any, ...]) -> str:
    try:
        return str(json.loads(row[3]).get("rid", "?"))
    except (ValueError, AttributeError):
        return f"journal record {row[1]}"


def _write(root: Path, path: Path, kept: dict[str, list[tuple[Any, ...]]], report: dict) -> None:  # type: ignore[type-arg]
    new = root / f"{DB_NAME}.salvage"
    for p in (new, Path(f"{new}-wal"), Path(f"{new}-shm")):
        p.unlink(missing_ok=True)
    conn = connect(new)
    db = StateDB(conn, new)
    db._migrate(SCHEMA_VERSION)  # noqa: SLF001 - a fresh file with the full schema
    with db.transaction() as c:
        for table, rows in kept.items():
            if rows:
                marks = ", ".join("?" * (len(rows[0]) - 1))
                c.executemany(
                    f"INSERT INTO {table} VALUES ({marks})",  # noqa: S608
                    [r[1:] for r in rows],
                )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    damaged = root / f"{DB_NAME}.damaged-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{damaged}{suffix}"))
    os.replace(new, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{new}{suffix}").unlink(missing_ok=True)
    fsync_dir(root)
    report["damaged_copy"] = str(damaged)


def format_report(report: dict[str, Any]) -> str:
    """The salvage report as lines for a person."""
    lines = [f"salvaged the state database; the damaged file is kept as {report['damaged_copy']}"]
    lines.append(f"chip state: {report['chip_state']}")
    for table, t in report["tables"].items():
        if t["unreadable_table"]:
            lines.append(f"  {table}: kept {t['kept']} rows; the rest of the table is unreadable")
        elif t["lost"]:
            lines.append(f"  {table}: kept {t['kept']} rows, lost {t['lost']}")
    if report["dropped_journal"]:
        ids = ", ".join(report["dropped_journal"][:20])
        lines.append(
            f"  journal records after the first lost one, dropped "
            f"({len(report['dropped_journal'])}): {ids}"
        )
    if report["dropped_replies"]:
        ids = ", ".join(report["dropped_replies"][:20])
        lines.append(
            f"  reply records not covered by the chip state kept, dropped "
            f"({len(report['dropped_replies'])}; a retry applies them again): {ids}"
        )
    if len(lines) == 2:
        lines.append("  nothing was lost")
    return "\n".join(lines)


__all__ = ["format_report", "salvage"]
