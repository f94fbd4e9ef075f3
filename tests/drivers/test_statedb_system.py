"""The SQLite state database with real ``hil serve`` processes: kills at chosen points
(inside a compaction, inside a schema migration), a damaged page refused at start and
``--salvage`` recovering the rest. Kills are SIGKILLs the server sends itself at a named
fault point (``HIL_STATE_FAULT``), so they land exactly where the test wants them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from drivers.remote import RemoteDriver
from drivers.sim import SimDriver
from drivers.statedb import DB_NAME, SCHEMA_VERSION
from protocols import Region
from tests.drivers.serve_proc import ServeProcess, wait_for

R = Region(0, 0, 16, 0, 16)
N = 48


def _stream(seed: int, n: int = N) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(f"step-{i}", rng.integers(0, 3, (16, 16, 4))) for i in range(n)]


def _expected(seed: int, stream: list[tuple[str, np.ndarray]]) -> np.ndarray:
    with SimDriver("hermes", seed=seed) as ref:
        for rid, counts in stream:
            ref.apply_pulses(R, counts, request_id=rid)
        return ref.true_conductances(R)


def _client(endpoint: str, stream, done: list[int], errors: list[BaseException]) -> None:  # type: ignore[no-untyped-def]
    try:
        # a timeout longer than a loaded compaction: a retry on a new connection may get a
        # new ZeroMQ routing id, which this server version still takes for the identity
        with RemoteDriver(endpoint, timeout_s=3, retries=40, backoff_s=0.02) as remote:
            for rid, counts in stream:
                remote.apply_pulses(R, counts, request_id=rid)
                done.append(1)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def _final_state(state: Path, seed: int) -> np.ndarray:
    with SimDriver("hermes", seed=seed, state_dir=state) as restored:
        return restored.true_conductances(R)


@pytest.mark.slow
def test_kill9_inside_a_compaction_loses_and_doubles_nothing(tmp_path: Path) -> None:
    stream = _stream(11)
    expected = _expected(5, stream)
    state, sock, log = tmp_path / "state", f"ipc://{tmp_path}/dev.sock", tmp_path / "serve.log"
    args = ("sim://?preset=hermes&seed=5&compact_every=16", sock, ["--state-dir", str(state)])
    done: list[int] = []
    errors: list[BaseException] = []
    # the server kills itself inside its third compaction (the first one creates the state,
    # the second folds requests 1-16), before that transaction commits: request 32's reply
    # was never sent
    server = ServeProcess(*args, log_path=log, env={"HIL_STATE_FAULT": "compaction:3"}).start()
    worker = threading.Thread(target=_client, args=(server.endpoint, stream, done, errors))
    worker.start()
    assert server.proc is not None
    assert wait_for(lambda: server.proc.poll() is not None, timeout_s=60)
    assert server.proc.returncode == -9
    assert 16 <= len(done) <= 31  # request 32 (or one racing the kill) was never answered
    server.kill()
    server = ServeProcess(*args, log_path=log).start()
    worker.join(90)
    assert not errors, errors
    assert len(done) == N
    assert server.terminate() == 0
    np.testing.assert_array_equal(_final_state(state, 5), expected)


_V1_WRITER = """
import sys
import numpy as np
import drivers.statedb as statedb
from drivers.sim import SimDriver
from protocols import Region

open_v1 = statedb.StateDB.open.__func__
statedb.StateDB.open = classmethod(lambda cls, d, **kw: open_v1(cls, d, migrate_to=1))
rng = np.random.default_rng(11)
d = SimDriver("hermes", seed=5, state_dir=sys.argv[1], compact_every=16)
for i in range(20):
    d.apply_pulses(Region(0, 0, 16, 0, 16), rng.integers(0, 3, (16, 16, 4)), request_id=f"v1-{i}")
print(d.state_db.version(), flush=True)
import os
os._exit(0)  # no close: the journal holds the requests since the last compaction
"""


@pytest.mark.slow
def test_kill9_inside_a_schema_migration_keeps_the_old_schema_then_migrates(
    tmp_path: Path,
) -> None:
    state, sock, log = tmp_path / "state", f"ipc://{tmp_path}/dev.sock", tmp_path / "serve.log"
    out = subprocess.run(
        [sys.executable, "-c", _V1_WRITER, str(state)], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "1", out.stderr[-2000:]
    v1_stream = [(f"v1-{i}", c) for i, (_, c) in enumerate(_stream(11, 20))]
    expected = _expected(5, v1_stream)

    args = ("sim://?preset=hermes&seed=5", sock, ["--state-dir", str(state)])
    with pytest.raises(RuntimeError, match="did not start"):
        ServeProcess(*args, log_path=log, env={"HIL_STATE_FAULT": "migration"}).start()
    with sqlite3.connect(state / DB_NAME) as conn:  # the migration rolled back whole
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "replies" not in names and "journal" in names
    with ServeProcess(*args, log_path=log) as server:
        with RemoteDriver(server.endpoint, timeout_s=5) as remote:
            assert remote.time_s() > 0  # serves the migrated state (a read would tick the clock)
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    np.testing.assert_array_equal(_final_state(state, 5), expected)


def _damage_table_page(db_path: Path, table: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
    conn.close()
    with open(db_path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(bytes([0x0D, 0xFF, 0xFF]) + b"\xa5" * (page_size - 3))


@pytest.mark.slow
def test_a_damaged_page_is_refused_at_start_and_salvage_recovers_the_rest(
    tmp_path: Path,
) -> None:
    stream = _stream(3, 20)
    expected = _expected(5, stream)
    state, sock, log = tmp_path / "state", f"ipc://{tmp_path}/dev.sock", tmp_path / "serve.log"
    args = ("sim://?preset=hermes&seed=5", sock, ["--state-dir", str(state)])
    server = ServeProcess(*args, log_path=log).start()
    remote = RemoteDriver(server.endpoint, timeout_s=2, retries=10)  # one client throughout
    try:
        for rid, counts in stream:
            remote.apply_pulses(R, counts, request_id=rid)
        server.kill()
        _damage_table_page(state / DB_NAME, "audit")

        refused = subprocess.run(
            [sys.executable, "-m", "hil", "--log-level", "error", "serve", args[0], "--bind",
             sock, "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "is damaged" in lines[0] and "--salvage" in lines[0]

        with ServeProcess(args[0], sock, [*args[2], "--salvage"], log_path=log):
            for rid, counts in stream:  # every retry is answered from its record
                remote.apply_pulses(R, counts, request_id=rid)
            remote.reset(Region(1, 0, 2, 0, 2), request_id="after-salvage")
            (row,) = remote.audit()
            assert (row["verb"], row["request_id"], row["outcome"]) == (
                "reset",
                "after-salvage",
                "ok",
            )
    finally:
        remote.close()
    text = log.read_text()
    assert "audit: kept 0 rows" in text and "chip state: kept whole" in text
    assert list(state.glob(f"{DB_NAME}.damaged-*"))
    np.testing.assert_array_equal(_final_state(state, 5), expected)
    audit = subprocess.run(
        [sys.executable, "-m", "hil", "audit", str(state), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(r["verb"], r["request_id"], r["chip"]) for r in rows] == [
        ("reset", "after-salvage", 1)
    ]
