"""The device server: a ZeroMQ ROUTER hosting one driver for many clients.

Each request is ``[identity, header_json, *buffers]`` (``docs/protocol.md``). The server

- decodes and validates it (:mod:`protocols.framing`), checks leases
  (:mod:`drivers.leases`), calls the driver and replies; any failure becomes a typed
  ``error`` reply, and input never crashes the loop;
- makes state-changing requests idempotent per client: reply records per identity
  (:class:`drivers.ledger.ReplyRecords`), so a retried id returns the original reply and
  applies nothing; the driver sees the id namespaced by the client (``client/request_id``);
- keeps its durable state in one SQLite database (:mod:`drivers.statedb`; in memory
  without ``--state-dir``): a state-changing request's journal row (SimDriver), reply
  record, wear rows and audit row commit in one transaction *before* the reply is sent;
  refused requests are audited too;
- logs one structlog event per request (request id, client, verb, region, duration);
- optionally requires CURVE (``zmq.auth``): only client public keys found in the
  ``auth_keys`` directory get in; rejected keys are logged.

:meth:`DeviceServer.handle` is the whole request logic without sockets; :meth:`serve`
is the socket loop: an I/O thread owns the socket, answers heartbeats and marks clients
alive as their messages arrive (liveness by arrival), runs a short request (an MVM, a
read) itself when the worker is idle, and passes every other request to the worker
thread; one lock keeps requests from ever running concurrently.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import numpy as np
import structlog
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from drivers import DeviceError, DriverError, InvalidRequest, LimitExceeded, NotFound
from drivers.allocation import Defects, defects_from_report
from drivers.auth import KeyRing
from drivers.base import (
    HEALTH_META_KEY,
    Driver,
    Report,
    Tenant,
    check_health_report,
    fingerprint,
)
from drivers.codes import dense_counts, mvm_over_codes
from drivers.conn_log import ConnectionLog
from drivers.leases import Lease, LeaseTable
from drivers.ledger import AuditLog, ReplyRecords, WearLedger
from drivers.reservations import Reservation, ReservationTable
from drivers.sessions import Sessions
from drivers.statedb import StateDB
from drivers.zmq_link import COPY_THRESHOLD
from protocols import PROTOCOL_VERSION, ProtocolError, encode
from protocols.framing import (
    MAX_BODY_FRAMES,
    MAX_MESSAGE_BYTES,
    decode_request,
    peek_request_id,
)
from protocols.messages import (
    STATE_CHANGING_KINDS,
    AdvanceReply,
    AdvanceRequest,
    AuditReply,
    AuditRequest,
    AuditRow,
    ChipUse,
    ClientStatus,
    ErrorReply,
    HealthPut,
    HealthReply,
    HealthRequest,
    Heartbeat,
    HeartbeatReply,
    Hello,
    HelloReply,
    InfoReply,
    InfoRequest,
    LeaseAcquire,
    LeaseRelease,
    LeaseReleased,
    LeaseReply,
    LeasesReply,
    LeasesRequest,
    LeaseStatus,
    MvmReply,
    MvmRequest,
    OwnLease,
    OwnReservation,
    ProgramReply,
    ProgramRequest,
    PulseReply,
    PulseRequest,
    QueueStatus,
    ReadReply,
    ReadRequest,
    RequestMessage,
    ReservationStatus,
    ReserveRelease,
    ReserveReleased,
    ReserveReply,
    ReserveRequest,
    ResetReply,
    ResetRequest,
    StatusReply,
    StatusRequest,
    TimeReply,
    TimeRequest,
    WearReply,
    WearRequest,
)
from protocols.models import AdvanceReport, ProgramReport, PulseReport, ResetReport
from protocols.region import Region

log = structlog.get_logger(__name__)

SERVER_NAME = "pcm-hil device server"
SERVER_VERSION = "0.1.0"
RATE_WINDOW_S = 60.0
AUDITED_KINDS = STATE_CHANGING_KINDS | {
    "lease_acquire",
    "lease_release",
    "health_put",
    "reserve",
    "reserve_release",
}
INLINE_KINDS = frozenset({"mvm", "read_conductances"})
"""Request kinds the I/O thread may serve itself when no other request runs."""
INLINE_MAX_ARRAY_BYTES = 256 * 1024
"""Largest arrays (all together) of a request the I/O thread serves itself: an MVM of
batch 1024 over 256 int8 codes; a larger one goes to the worker."""
INLINE_WAIT_S = 1.0
"""How long the I/O thread waits for the worker's sweep (a lease/reservation expiry, at
most one state-db transaction) before it passes a short request to the worker instead."""
_INLINE_HINT = re.compile(rb'"kind":\s*"(?:mvm|read_conductances)"')
"""A cheap look at a header for a kind in :data:`INLINE_KINDS` (within its first
:data:`_HINT_SPAN` bytes); only a hint: the strict decode decides."""
_HINT_SPAN = 512


def _info_enabled() -> bool:
    """Whether structlog's configured level lets ``info`` events through (read per call:
    the CLI or a test may reconfigure it)."""
    wrapper = structlog.get_config()["wrapper_class"]
    check = getattr(wrapper, "is_enabled_for", None)
    return True if check is None else bool(check(None, logging.INFO))


_VISIBLE_ASCII = bytes(range(33, 127))


def client_name(identity: bytes) -> str:
    """Printable name of a ROUTER identity (ASCII as is, else hex)."""
    if identity and not identity.translate(None, _VISIBLE_ASCII):  # all in 33..126
        return identity.decode("ascii")
    return identity.hex()


def driver_request_id(client: str, request_id: str) -> str:
    """The id the driver sees: the client's id namespaced by client, at most 128 chars."""
    rid = f"{client}/{request_id}"
    if len(rid) <= 128:
        return rid
    return "h/" + hashlib.blake2b(rid.encode(), digest_size=32).hexdigest()


class DeviceServer:
    """Hosts ``driver`` on ``bind`` (``tcp://``, ``ipc://`` or ``inproc://``)."""

    def __init__(
        self,
        driver: Driver,
        bind: str | Sequence[str],
        *,
        lease_ttl_s: float = 10.0,
        heartbeat_interval_s: float = 1.0,
        auth_keys_dir: str | Path | None = None,
        server_secret_key: str | Path | None = None,
        context: zmq.Context | None = None,
        state_db: StateDB | None = None,
        reply_records: int = 4096,
        max_leases: int = 256,
        reservation_ttl_s: float = 600.0,
        max_reservations: int = 16,
    ) -> None:
        self.driver = driver
        self.binds = [bind] if isinstance(bind, str) else list(bind)
        self.leases = LeaseTable(lease_ttl_s)
        # the driver's database when it has one (SimDriver with a state dir), else the given
        # one, else a private in-memory one: one code path, durable or not
        db = getattr(driver, "state_db", None) or state_db
        self._own_db = db is None
        self.db: StateDB = StateDB.memory() if db is None else db
        info = driver.info()
        self.replies = ReplyRecords(self.db, reply_records)
        self.audit = AuditLog(self.db)
        # the device records (wear ledger, health report) live in this database; a driver
        # that keeps records is handed it, and the server records the wear (with identities)
        if driver.keeps_records:
            driver.keep_records_in(self.db, hosted=True)
            assert isinstance(driver.wear_ledger, WearLedger)
            self.wear = driver.wear_ledger
        else:
            self.wear = WearLedger(self.db, (info.rows, info.cols, info.devices_per_cell))
        self.sessions = Sessions(self.db, None if auth_keys_dir is None else Path(auth_keys_dir))
        self.max_leases = max_leases
        self.reservations = ReservationTable(
            info.chips,
            info.rows,
            info.cols,
            reservation_ttl_s,
            queue_ttl_s=lease_ttl_s,
            max_per_identity=max_reservations,
        )
        self._restore_reservations(time.monotonic())
        self._started = time.monotonic()
        self._clients: dict[str, list[float]] = {}  # identity -> [last seen, requests]
        self._recent: deque[tuple[float, str]] = deque(maxlen=200_000)
        self._live = threading.Lock()  # the I/O thread's arrival touches vs expiry
        self._pending: dict[str, int] = {}  # identity -> requests waiting for the worker
        self._exec = threading.Lock()  # held while a request (or the sweep) runs
        self.inline_requests = 0
        """Requests the I/O thread served itself (:meth:`_serve_inline`)."""
        self.worker_requests = 0
        """Requests the worker thread served."""
        self._restore_leases(time.monotonic())
        self.heartbeat_interval_s = heartbeat_interval_s
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._auth: ThreadAuthenticator | None = None
        self._keyring: KeyRing | None = None
        self._server_keys: tuple[bytes, bytes] | None = None
        self.bound: list[str] = []
        self._reload = threading.Event()
        self._next_key_check = 0.0
        if auth_keys_dir is not None:
            secret_file = Path(server_secret_key or Path(auth_keys_dir) / "server.key_secret")
            if not secret_file.is_file():
                raise InvalidRequest(
                    f"server secret key {secret_file} not found; create it with "
                    f"'hil keys generate {secret_file.parent} --name {secret_file.stem}'"
                )
            public, secret = zmq.auth.load_certificate(str(secret_file))
            if secret is None:
                raise InvalidRequest(f"{secret_file} holds no secret key")
            self._server_keys = (public, secret)
            # the server's own key pair is never a client's, even with server.key in DIR
            self._keyring = KeyRing(Path(auth_keys_dir), exclude={public})

    # ------------------------------------------------------------ socket loop
    def serve(self, ready: threading.Event | None = None, on_ready: Any = None) -> None:
        """Run until :meth:`stop`; closes the socket (not the driver) on exit.

        Once bound, sets ``ready`` and calls ``on_ready(self.bound)`` if given.
        """
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # replies never block the loop: an unroutable peer raises EHOSTUNREACH and a full
        # pipe EAGAIN (NOBLOCK); either way the reply is dropped and logged (the client
        # retries with the same request id and gets the recorded reply)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDTIMEO, 0)
        sock.copy_threshold = COPY_THRESHOLD  # copying is cheaper than pyzmq's zero-copy GC
        # a peer sending one frame larger than a whole message may be is disconnected by
        # libzmq before the frame arrives: no reply is possible (docs/protocol.md, Bounds)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if self._keyring is not None and self._server_keys is not None:
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve_callback("*", credentials_provider=self._keyring)
            sock.curve_publickey, sock.curve_secretkey = self._server_keys
            sock.curve_server = True
        conn_log = ConnectionLog(sock)  # connects, disconnects, refused handshakes
        try:
            for endpoint in self.binds:
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise DeviceError(
                        f"cannot bind {endpoint!r}: {exc}; pick another --bind address "
                        f"(tcp://127.0.0.1:* chooses a free port)"
                    ) from None
                self.bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
            log.info(
                "server_listening",
                endpoints=self.bound,
                curve=self._keyring is not None,
                info=self.driver.info().model_dump(mode="json"),
            )
            if ready is not None:
                ready.set()
            if on_ready is not None:
                on_ready(list(self.bound))
            self._serve_loop(sock, conn_log)
        finally:
            conn_log.close()
            sock.close()
            if self._auth is not None:
                self._auth.stop()
            log.info("server_stopped")

    def _serve_loop(self, sock: zmq.Socket, conn_log: ConnectionLog) -> None:
        """Liveness by arrival: an I/O thread owns the socket, answers heartbeats itself
        (touching the client's leases and reservations the moment they arrive), serves a
        short request (:meth:`_serve_inline`) itself when nothing else runs, and passes
        every other request to this thread, the worker; replies go back out through the
        I/O thread. The driver and the tables are changed only under :attr:`_exec`, held
        by whichever thread runs a request (or the worker's sweep), so requests never run
        concurrently. A long request therefore never delays a heartbeat, and a client
        whose request waits behind it counts as alive (:meth:`_arrival`)."""
        endpoint = f"inproc://hil-server-{id(self):x}-{time.monotonic_ns()}"
        back = self._ctx.socket(zmq.PAIR)
        back.bind(endpoint)
        front = self._ctx.socket(zmq.PAIR)
        front.connect(endpoint)
        io = threading.Thread(
            target=self._io_loop, args=(sock, back, conn_log), name="hil-server-io", daemon=True
        )
        io.start()
        try:
            while not self._stop.is_set():
                if not front.poll(50):
                    with self._exec:
                        self._sweep(time.monotonic())
                    continue
                routing, uid, who, *body = front.recv_multipart()
                user_id = uid.decode() or None
                try:
                    with self._exec:
                        self.worker_requests += 1
                        reply = self.handle(routing, body, time.monotonic(), user_id)
                finally:
                    self._done(who.decode())
                front.send_multipart([routing, *reply], copy=False)
        finally:
            self._stop.set()
            io.join(timeout=5)
            front.close(linger=0)
            back.close(linger=0)

    def _io_loop(self, sock: zmq.Socket, back: zmq.Socket, conn_log: ConnectionLog) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        poller.register(conn_log.monitor, zmq.POLLIN)
        forwarded = 0  # requests passed to the worker and not answered yet
        while not self._stop.is_set():
            self._check_keys(time.monotonic())  # --auth-keys re-read (SIGHUP, folder change)
            events = dict(poller.poll(50))
            if conn_log.monitor in events:
                conn_log.drain()
            if back in events:  # the worker's replies
                while True:
                    try:
                        frames = back.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    forwarded -= 1
                    self._send(sock, frames[0].bytes, list(frames[1:]))
            if sock not in events:
                continue
            try:
                peer, body, user_id, refusal = self._receive(sock)
            except zmq.Again:
                continue
            if refusal is not None:
                rid, reason = refusal
                reply = encode(
                    ErrorReply(request_id=rid or "-", code="limit_exceeded", message=reason)
                )
                log.warning(
                    "request_refused", client=client_name(peer), request_id=rid, reason=reason
                )
                self._send(sock, peer, reply)
                continue
            if not body:
                continue  # an identity with no body: nothing to answer
            if not forwarded and _INLINE_HINT.search(body[0], 0, _HINT_SPAN):
                out = self._serve_inline(peer, body, user_id)
                if out is not None:
                    self._send(sock, peer, out)
                    continue
            who = self._arrival(body, user_id)
            fast = self._heartbeat_now(body, who, user_id) if who else None
            if fast is not None:
                self._send(sock, peer, fast)
                continue
            back.send_multipart([peer, (user_id or "").encode(), who.encode(), *body])
            forwarded += 1

    def _serve_inline(
        self, routing: bytes, frames: list[bytes], user_id: str | None
    ) -> list[bytes | memoryview] | None:
        """The reply to a short request run on the I/O thread itself (no hop to the worker
        and back), or ``None`` when it must go to the worker: the request is not short —
        only ``mvm`` and ``read_conductances`` with at most :data:`INLINE_MAX_ARRAY_BYTES`
        of arrays are, so a heartbeat waits at most one such request — or :attr:`_exec`
        stayed taken for :data:`INLINE_WAIT_S`. The caller checks that no forwarded request
        is pending, so a client's requests are answered in order, and the worker runs no
        request: only its sweep can hold the lock, briefly, so the request waits for it
        rather than taking the hop (which would be decided by when the sweep happened to
        run)."""
        if not self._exec.acquire(timeout=INLINE_WAIT_S):
            return None
        try:
            decoded: tuple[RequestMessage, dict[str, np.ndarray]] | None
            try:
                decoded = decode_request(frames)
            except ProtocolError:
                decoded = None  # handle() answers it with the error (short either way)
            else:
                msg, arrays = decoded
                if msg.kind not in INLINE_KINDS or (
                    sum(a.nbytes for a in arrays.values()) > INLINE_MAX_ARRAY_BYTES
                ):
                    return None
            self.inline_requests += 1
            return self._handle(routing, frames, time.monotonic(), user_id, decoded)
        finally:
            self._exec.release()

    def _arrival(self, body: list[bytes], user_id: str | None) -> str:
        """The identity of an arriving request ("" if it has none yet): it is alive now,
        and stays alive while its request waits for the worker."""
        try:
            header = json.loads(body[0])
            if not isinstance(header, dict) or header.get("kind") == "hello":
                return ""
            session = header.get("session")
            who = self.sessions.identify(session if isinstance(session, str) else None, user_id)
        except Exception:  # noqa: BLE001 - the worker answers bad requests properly
            return ""
        now = time.monotonic()
        with self._live:
            self._pending[who] = self._pending.get(who, 0) + 1
            self.leases.touch(who, now)
            self.reservations.touch(who, now)
        return who

    def _done(self, who: str) -> None:
        if not who:
            return
        with self._live:
            n = self._pending.get(who, 0) - 1
            if n > 0:
                self._pending[who] = n
            else:
                self._pending.pop(who, None)

    def _keep_waiting_alive(self, now: float) -> None:
        """Clients whose requests wait for the worker are alive (worker thread)."""
        with self._live:
            for who in list(self._pending):
                self.leases.touch(who, now)
                self.reservations.touch(who, now)

    def _heartbeat_now(self, body: list[bytes], who: str, user_id: str | None) -> list[Any] | None:
        """The reply to a heartbeat, from the I/O thread (None: not a plain heartbeat)."""
        if len(body) != 1 or b'"heartbeat"' not in body[0]:
            return None
        try:
            msg, _ = decode_request(body)
        except ProtocolError:
            return None
        if not isinstance(msg, Heartbeat):
            return None
        self._done(who)
        now = time.monotonic()
        self._seen(who, msg.kind, now)
        held = list(self.reservations.held.values())  # a copy: the worker may change it
        leases = list(self.leases.all())
        return encode(
            HeartbeatReply(
                request_id=msg.request_id,
                leases=sum(1 for x in leases if x.client == who),
                runs=tuple(sorted(r.run_id for r in held if r.identity == who)),
            )
        )

    def _receive(
        self, sock: zmq.Socket
    ) -> tuple[bytes, list[bytes], str | None, tuple[str | None, str] | None]:
        """``(routing id, body frames, CURVE user id, refusal)``, read one frame at a time:
        beyond :data:`MAX_BODY_FRAMES` frames or :data:`MAX_MESSAGE_BYTES` bytes the rest
        is received and dropped without being kept; ``refusal`` is then the request id of
        the header (if it parses) and the reason."""
        routing = sock.recv(flags=zmq.NOBLOCK, copy=False)
        body: list[zmq.Frame] = []
        total, n = 0, 0
        refusal: tuple[str | None, str] | None = None
        more = routing.more  # the frame's own flag: no getsockopt(RCVMORE) per frame
        while more:
            frame = sock.recv(copy=False)
            more = frame.more
            n += 1
            total += len(frame)
            if refusal is not None:
                continue
            reason = None
            if n > MAX_BODY_FRAMES:
                reason = (
                    f"message has more than {MAX_BODY_FRAMES} frames (a header and at most "
                    f"4 arrays)"
                )
            elif total > MAX_MESSAGE_BYTES:
                reason = f"message exceeds {MAX_MESSAGE_BYTES} bytes (all frames together)"
            if reason is not None:
                refusal = (peek_request_id(body[0].buffer) if body else None, reason)
                body = []
                continue
            body.append(frame)
        user_id = None
        if body and self._keyring is not None:
            try:
                uid = body[0].get("User-Id")
                user_id = uid if isinstance(uid, str) else None
            except zmq.ZMQError:
                user_id = None
        return routing.bytes, [f.bytes for f in body], user_id, refusal

    @staticmethod
    def _send(sock: zmq.Socket, identity: bytes, reply: list[Any]) -> None:
        """Send without ever blocking; a reply that cannot go out now is dropped and logged."""
        try:
            sock.send_multipart([identity, *reply], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (peer gone) or EAGAIN (peer not reading)
            log.warning("reply_dropped", client=client_name(identity), reason=str(exc))

    def stop(self) -> None:
        """Ask :meth:`serve` to return (safe from any thread or a signal handler)."""
        self._stop.set()

    def reload_keys(self) -> None:
        """Ask :meth:`serve` to re-read the ``--auth-keys`` folder (SIGHUP; safe from any
        thread or a signal handler)."""
        self._reload.set()

    def _check_keys(self, now: float) -> None:
        """Re-read the keys folder on request, or (every 0.5 s at most) when it changed."""
        ring = self._keyring
        if ring is None:
            return
        if self._reload.is_set() or (now >= self._next_key_check and ring.changed()):
            self._reload.clear()
            ring.reload()
        if now >= self._next_key_check:
            self._next_key_check = now + 0.5

    def close(self) -> None:
        """Fold the wear ledger and close a database this server opened itself."""
        try:
            self.wear.fold()
        finally:
            if self._own_db:
                self.db.close()

    def _sweep(self, now: float) -> None:
        self._keep_waiting_alive(now)
        self._expired(self.leases.expire(now))
        self._reservations_lapsed(self.reservations.expire(now))

    def _reservations_lapsed(self, gone: list[Reservation]) -> None:
        if not gone:
            return
        with self.db.transaction() as c:
            c.executemany(
                "DELETE FROM reservations WHERE identity = ? AND run_id = ?",
                [(r.identity, r.run_id) for r in gone],
            )
        for r in gone:
            self._end_tenant(r)
            log.info(
                "reservation_expired",
                reservation_id=r.reservation_id,
                client=r.identity,
                run_id=r.run_id,
                regions={k: str(v) for k, v in r.regions.items()},
            )

    def _restore_reservations(self, now: float) -> None:
        """Reservations of the database, alive again for one TTL from ``now``."""
        rows = self.db.conn.execute(
            "SELECT reservation_id, identity, run_id, name, chip, row0, row1, col0, col1, "
            "whole_chip, seed, created FROM reservations ORDER BY rowid"
        ).fetchall()
        found: dict[tuple[str, str], Reservation] = {}
        for rid, ident, run_id, name, chip, r0, r1, c0, c1, whole, seed, created in rows:
            res = found.setdefault(
                (ident, run_id),
                Reservation(rid.split("/")[0], ident, run_id, {}, seed, created=created),
            )
            res.regions[name] = Region(chip, r0, r1, c0, c1)
            if whole:
                res.whole = res.whole | {name}
        for res in found.values():
            self.reservations.restore(res, now)
        self.driver.keep_tenants(
            [t for t in (Tenant.of(r) for r in found.values()) if t is not None]
        )

    def _end_tenant(self, res: Reservation) -> None:
        tenant = Tenant.of(res)
        if tenant is not None:
            self.driver.end_tenant(tenant)

    def _tenant(self, client: str, region: Region | None) -> Tenant | None:
        """The tenant of a request: the client's reservation holding ``region`` (for the
        whole device, e.g. ``advance``: its latest reservation)."""
        if region is None:
            mine = [r for r in self.reservations.all() if r.identity == client]
            return Tenant.of(mine[-1]) if mine else None
        res = self.reservations.holder_of(client, region)
        return None if res is None else Tenant.of(res)

    def _expired(self, leases: list[Lease]) -> None:
        if not leases:
            return
        with self.db.transaction() as c:
            c.executemany("DELETE FROM leases WHERE lease_id = ?", [(x.lease_id,) for x in leases])
        for lease in leases:
            log.info(
                "lease_expired",
                lease_id=lease.lease_id,
                client=lease.client,
                region=str(lease.region),
            )

    def _restore_leases(self, now: float) -> None:
        """Leases of the database, alive again for one TTL from ``now`` (after a restart)."""
        rows = self.db.conn.execute(
            "SELECT lease_id, identity, chip, row0, row1, col0, col1, mode FROM leases"
        ).fetchall()
        for lid, ident, chip, r0, r1, c0, c1, mode in rows:
            self.leases.restore(Lease(lid, ident, Region(chip, r0, r1, c0, c1), mode), now)

    # ------------------------------------------------------------ request logic
    def handle(
        self, routing: bytes, frames: Sequence[bytes], now: float, user_id: str | None = None
    ) -> list[bytes | memoryview]:
        """Reply frames for one request ``frames`` from peer ``routing`` (whose CURVE key is
        ``user_id``). Never raises. The client's identity comes from its key or session
        token (:mod:`drivers.sessions`), never from ``routing``."""
        return self._handle(routing, frames, now, user_id, None)

    def _handle(
        self,
        routing: bytes,
        frames: Sequence[bytes],
        now: float,
        user_id: str | None,
        decoded: tuple[RequestMessage, dict[str, np.ndarray]] | None,
    ) -> list[bytes | memoryview]:
        """:meth:`handle`, with the request already decoded when ``decoded`` is given."""
        client = f"peer:{client_name(routing)}"
        t0 = time.perf_counter()
        request_id, verb, region = "-", "?", None
        try:
            msg, arrays = decode_request(frames) if decoded is None else decoded
            request_id, verb = msg.request_id, msg.kind
            region = getattr(msg, "region", None)
            token = ""
            if isinstance(msg, Hello):
                client, token = self.sessions.hello(msg.session, msg.client, user_id)
            else:
                client = self.sessions.identify(msg.session, user_id)
            self._seen(client, verb, now)
            # lapsed before this message arrived: a late message does not revive them
            # (a message that waited for the worker was counted alive on arrival)
            self._keep_waiting_alive(now)
            self._reservations_lapsed(self.reservations.expire(now))
            self.leases.touch(client, now)
            self.reservations.touch(client, now)
            self._expired(self.leases.expire(now))
            out = self._dispatch(client, msg, arrays, now, token)
            code = "ok"
        except sqlite3.Error as exc:  # the state could not be made durable: stop serving
            code = "device_error"
            log.critical("state_db_failed", error=str(exc), verb=verb, request_id=request_id)
            self.stop()
            out = encode(
                ErrorReply(
                    request_id=request_id,
                    code="device_error",
                    message=f"the server could not record this request durably ({exc}); it "
                    f"is stopping; retry with the same request_id once it is back",
                )
            )
        except ProtocolError as exc:  # the header's id whenever it parsed (never "-" then)
            code = exc.code
            request_id = exc.request_id or request_id
            out = encode(ErrorReply(request_id=request_id, code=exc.code, message=str(exc)))
        except DriverError as exc:
            code = exc.code
            out = encode(ErrorReply(request_id=request_id, code=exc.code, message=str(exc)))
        except Exception as exc:  # the server must survive any driver bug
            code = "internal"
            log.exception("request_crashed", client=client, verb=verb, request_id=request_id)
            out = encode(
                ErrorReply(
                    request_id=request_id, code="internal", message=f"{type(exc).__name__}: {exc}"
                )
            )
        ok = code == "ok"
        if not ok or _info_enabled():  # a filtered event costs a logger bind: skip it
            fields = {
                "client": client,
                "verb": verb,
                "request_id": request_id,
                "region": None if region is None else str(region),
                "duration_us": round((time.perf_counter() - t0) * 1e6, 1),
                "outcome": code,
            }
            (log.info if ok else log.warning)("request", **fields)
        if not ok and not client.startswith("peer:") and verb in AUDITED_KINDS:
            self._audit_refusal(client, verb, region, code, request_id)
        return out

    def _audit_refusal(
        self, client: str, verb: str, region: Region | None, code: str, request_id: str
    ) -> None:
        try:
            self.audit.record(client, "", verb, region, 0, code, request_id)
        except sqlite3.Error as exc:
            log.critical("state_db_failed", error=str(exc), verb=verb, request_id=request_id)
            self.stop()

    def _seen(self, client: str, verb: str, now: float) -> None:
        entry = self._clients.setdefault(client, [now, 0.0])
        entry[0] = now
        entry[1] += 1
        self._recent.append((now, verb))

    def _dispatch(
        self,
        client: str,
        msg: RequestMessage,
        arrays: dict[str, np.ndarray],
        now: float,
        token: str = "",
    ) -> list[bytes | memoryview]:
        """Reply frames of ``msg``: one handler per request kind (:data:`_HANDLERS`)."""
        handler = _HANDLERS.get(type(msg))
        if handler is None:  # pragma: no cover - every request kind has a handler
            raise InvalidRequest(f"request kind {msg.kind!r} is not served")
        return handler(self, _Call(client, msg, arrays, now, token))

    def _on_hello(self, c: _Call) -> list[bytes | memoryview]:
        msg = c.msg
        assert isinstance(msg, Hello)
        log.info("client_hello", client=c.client, name=msg.client, leases=len(self.leases))
        return encode(
            HelloReply(
                request_id=msg.request_id,
                server=SERVER_NAME,
                client_id=c.client,
                session=c.token,
                info=self.driver.info(),
                heartbeat_interval_s=self.heartbeat_interval_s,
                lease_ttl_s=self.leases.ttl_s,
            )
        )

    def _on_info(self, c: _Call) -> list[bytes | memoryview]:
        return encode(InfoReply(request_id=c.msg.request_id, info=self.driver.info()))

    def _on_heartbeat(self, c: _Call) -> list[bytes | memoryview]:
        held = len(self.leases.held_by(c.client))
        runs = self.reservations.runs_of(c.client)
        return encode(HeartbeatReply(request_id=c.msg.request_id, leases=held, runs=runs))

    def _on_reserve(self, c: _Call) -> list[bytes | memoryview]:
        assert isinstance(c.msg, ReserveRequest)
        return encode(self._reserve(c.client, c.msg, c.now))

    def _on_reserve_release(self, c: _Call) -> list[bytes | memoryview]:
        msg, client = c.msg, c.client
        assert isinstance(msg, ReserveRelease)
        # once per request id, like lease_release: a retry gets the first reply
        fp = fingerprint(msg.kind, msg.run_id)
        with self.db.transaction() as db:
            recorded = self.replies.get(client, msg.request_id, msg.kind, fp)
            if isinstance(recorded, ReserveReleased):
                return encode(recorded)
            dropped = self.reservations.release(client, msg.run_id, c.now)
            db.execute(
                "DELETE FROM reservations WHERE identity = ? AND run_id = ?",
                (client, msg.run_id),
            )
            self.audit.record(client, msg.run_id, msg.kind, None, 0, "ok", msg.request_id)
            reply = ReserveReleased(
                request_id=msg.request_id, run_id=msg.run_id, released=dropped is not None
            )
            self.replies.put(client, msg.request_id, msg.kind, fp, reply)
        if dropped is not None:
            self._end_tenant(dropped)
            log.info("reservation_released", client=client, run_id=msg.run_id)
        return encode(reply)

    def _on_time(self, c: _Call) -> list[bytes | memoryview]:
        with self.driver.tenant(self._tenant(c.client, None)):
            t = self.driver.time_s()
        return encode(TimeReply(request_id=c.msg.request_id, time_s=t))

    def _on_status(self, c: _Call) -> list[bytes | memoryview]:
        return encode(self._status(c.msg.request_id, c.now))

    def _on_lease_acquire(self, c: _Call) -> list[bytes | memoryview]:
        assert isinstance(c.msg, LeaseAcquire)
        self.reservations.check(c.client, c.msg.region, f"a {c.msg.mode} lease")
        return encode(self._lease_acquire(c.client, c.msg, c.now))

    def _on_lease_release(self, c: _Call) -> list[bytes | memoryview]:
        assert isinstance(c.msg, LeaseRelease)
        return encode(self._lease_release(c.client, c.msg, c.now))

    def _on_leases(self, c: _Call) -> list[bytes | memoryview]:
        return encode(self._own_leases(c.client, c.msg.request_id))

    def _on_audit(self, c: _Call) -> list[bytes | memoryview]:
        msg = c.msg
        assert isinstance(msg, AuditRequest)
        rows = self.audit.query(
            since=msg.since, identity=msg.identity, region=msg.region, limit=msg.limit
        )
        return encode(
            AuditReply(request_id=msg.request_id, rows=tuple(AuditRow(**r) for r in rows))
        )

    def _on_wear(self, c: _Call) -> list[bytes | memoryview]:
        assert isinstance(c.msg, WearRequest)
        region = self.driver._check_region(c.msg.region)  # noqa: SLF001 - the contract's check
        set_p, resets = self.wear.device_totals(region.chip)
        rs, cs = region.slices()
        return encode(
            WearReply(request_id=c.msg.request_id),
            {"set_pulses": set_p[rs, cs], "resets": resets[rs, cs]},
        )

    def _on_health(self, c: _Call) -> list[bytes | memoryview]:
        text = self.db.get_meta(HEALTH_META_KEY)
        out = {} if text is None else {"report": np.frombuffer(text.encode(), np.uint8)}
        return encode(HealthReply(request_id=c.msg.request_id), out)

    def _on_health_put(self, c: _Call) -> list[bytes | memoryview]:
        try:
            report = json.loads(np.asarray(c.arrays["report"], np.uint8).tobytes())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidRequest(f"the health report is not JSON: {exc}") from None
        text = check_health_report(report)
        with self.db.transaction():
            self.db.set_meta(HEALTH_META_KEY, text)
            self.audit.record(c.client, "", c.msg.kind, None, 0, "ok", c.msg.request_id)
        return encode(HealthReply(request_id=c.msg.request_id))

    def _on_mvm(self, c: _Call) -> list[bytes | memoryview]:
        msg, d = c.msg, self.driver
        assert isinstance(msg, MvmRequest)
        self.leases.check(c.client, msg.region, write=False, now=c.now)
        self.reservations.check(c.client, msg.region, "an mvm")
        with d.tenant(self._tenant(c.client, msg.region)):
            if "x_code" in c.arrays:  # DAC codes in, ADC codes out (drivers/codes.py)
                y_code, lsb = mvm_over_codes(d, msg.region, c.arrays["x_code"], msg.transpose)
                reply = MvmReply(request_id=msg.request_id, y_lsb_us=lsb)
                return encode(reply, {"y_code": y_code})
            y = d.mvm(msg.region, c.arrays["x"], transpose=msg.transpose)
        return encode(MvmReply(request_id=msg.request_id), {"y": y})

    def _on_read(self, c: _Call) -> list[bytes | memoryview]:
        assert isinstance(c.msg, ReadRequest)
        self.leases.check(c.client, c.msg.region, write=False, now=c.now)
        self.reservations.check(c.client, c.msg.region, "a read")
        with self.driver.tenant(self._tenant(c.client, c.msg.region)):
            g = self.driver.read_conductances(c.msg.region)
        return encode(ReadReply(request_id=c.msg.request_id), {"g_us": g})

    def _on_state_changing(self, c: _Call) -> list[bytes | memoryview]:
        assert isinstance(c.msg, PulseRequest | ResetRequest | ProgramRequest | AdvanceRequest)
        return encode(self._state_changing(c.client, c.msg, c.arrays, c.now))

    def _lease_acquire(self, client: str, msg: LeaseAcquire, now: float) -> LeaseReply:
        """Grant a lease once per request id: a retry gets the recorded reply while that
        lease lives, ``not_found`` once it has lapsed (never a second lease)."""
        rid = msg.request_id
        fp = fingerprint(msg.kind, msg.model_dump_json(include={"region", "mode"}))
        with self.db.transaction() as c:
            recorded = self.replies.get(client, rid, msg.kind, fp)
            if isinstance(recorded, LeaseReply):
                if any(x.lease_id == recorded.lease_id for x in self.leases.held_by(client)):
                    return recorded
                raise NotFound(
                    f"lease {recorded.lease_id}, granted to request {rid!r}, has lapsed "
                    f"(released or expired); acquire again with a fresh request_id"
                )
            self.driver._check_region(msg.region)  # noqa: SLF001 - checked against the chips
            if len(self.leases.held_by(client)) >= self.max_leases:
                raise LimitExceeded(
                    f"this client holds {self.max_leases} leases, its quota; release some"
                )
            lease = self.leases.acquire(client, msg.region, msg.mode, now)
            r = lease.region
            c.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (lease.lease_id, client, rid, r.chip, r.row0, r.row1, r.col0, r.col1,
                 lease.mode, time.time()),
            )  # fmt: skip
            self.audit.record(client, "", msg.kind, r, 0, "ok", rid)
            reply = LeaseReply(
                request_id=rid, lease_id=lease.lease_id, region=r, mode=msg.mode,
                ttl_s=self.leases.ttl_s,
            )  # fmt: skip
            self.replies.put(client, rid, msg.kind, fp, reply)
        return reply

    def _lease_release(self, client: str, msg: LeaseRelease, now: float) -> LeaseReleased:
        """Release once per request id: a retry gets the first reply."""
        rid = msg.request_id
        fp = fingerprint(msg.kind, msg.lease_id)
        with self.db.transaction() as c:
            recorded = self.replies.get(client, rid, msg.kind, fp)
            if isinstance(recorded, LeaseReleased):
                return recorded
            released = self.leases.release(client, msg.lease_id, now)
            c.execute("DELETE FROM leases WHERE lease_id = ?", (released.lease_id,))
            self.audit.record(client, "", msg.kind, released.region, 0, "ok", rid)
            reply = LeaseReleased(request_id=rid, lease_id=msg.lease_id)
            self.replies.put(client, rid, msg.kind, fp, reply)
        return reply

    def _own_leases(self, client: str, rid: str) -> LeasesReply:
        """The caller's live leases (expired ones were swept before dispatch) and its run
        reservations, oldest first."""
        live = {x.lease_id for x in self.leases.held_by(client)}
        rows = self.db.conn.execute(
            "SELECT lease_id, request_id, chip, row0, row1, col0, col1, mode, granted "
            "FROM leases WHERE identity = ? ORDER BY granted, lease_id",
            (client,),
        ).fetchall()
        leases = tuple(
            OwnLease(lease_id=lid, region=Region(chip, r0, r1, c0, c1), mode=mode,
                     request_id=req, granted=granted)
            for lid, req, chip, r0, r1, c0, c1, mode, granted in rows
            if lid in live
        )  # fmt: skip
        table = self.reservations  # live ones; each lapses a TTL after the last message
        left = table.ttl_s - (time.monotonic() - table.last_seen.get(client, time.monotonic()))
        reservations = tuple(
            OwnReservation(reservation_id=res.reservation_id, run_id=res.run_id, name=name,
                           region=g, whole_chip=name in res.whole, created=res.created,
                           expires=time.time() + max(0.0, left))
            for res in sorted(table.all(), key=lambda r: r.created)
            if res.identity == client
            for name, g in res.regions.items()
        )  # fmt: skip
        return LeasesReply(request_id=rid, leases=leases, reservations=reservations)

    def _status(self, rid: str, now: float) -> StatusReply:
        info = self.driver.info()
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()
        counts: dict[str, int] = {}
        for _, verb in self._recent:
            counts[verb] = counts.get(verb, 0) + 1
        window = max(1e-9, min(RATE_WINDOW_S, now - self._started))
        leases = self.leases.all()
        held: dict[str, int] = {}
        for x in leases:
            held[x.client] = held.get(x.client, 0) + 1
        chips = []
        held_res = self.reservations.all()
        for chip in range(info.chips):
            mask = np.zeros((info.rows, info.cols), bool)
            for x in leases:
                if x.region.chip == chip:
                    mask[x.region.slices()] = True
            rmask = np.zeros((info.rows, info.cols), bool)
            for res in held_res:
                for g in res.regions.values():
                    if g.chip == chip:
                        rmask[g.slices()] = True
            set_p, resets = self.wear.device_totals(chip)
            chips.append(
                ChipUse(
                    chip=chip,
                    leased_fraction=float(mask.mean()),
                    reserved_fraction=float(rmask.mean()),
                    set_pulses=int(set_p.sum()),
                    resets=int(resets.sum()),
                )
            )
        return StatusReply(
            request_id=rid,
            server=SERVER_NAME,
            server_version=SERVER_VERSION,
            protocol=PROTOCOL_VERSION,
            uptime_s=now - self._started,
            driver=info.driver,
            preset=info.preset,
            state_dir=None if self.db.path is None else str(self.db.path.parent),
            clients=tuple(
                ClientStatus(
                    identity=c,
                    last_seen_s=max(0.0, now - seen),
                    requests=int(n),
                    leases=held.get(c, 0),
                )
                for c, (seen, n) in sorted(self._clients.items())
            ),
            leases=tuple(
                LeaseStatus(lease_id=x.lease_id, identity=x.client, region=x.region, mode=x.mode)  # type: ignore[arg-type]
                for x in leases
            ),
            reservations=tuple(
                ReservationStatus(
                    reservation_id=res.reservation_id,
                    identity=res.identity,
                    run_id=res.run_id,
                    name=name,
                    region=g,
                    expires_in_s=max(
                        0.0,
                        self.reservations.ttl_s
                        - (now - self.reservations.last_seen.get(res.identity, now)),
                    ),
                )
                for res in held_res
                for name, g in res.regions.items()
            ),
            queue=tuple(
                QueueStatus(
                    position=i + 1,
                    identity=p.identity,
                    run_id=p.run_id,
                    cells=p.cells,
                    waiting_s=max(0.0, now - p.since),
                )
                for i, p in enumerate(self.reservations.queue)
            ),
            request_rates={v: n / window for v, n in sorted(counts.items())},
            chips=tuple(chips),
            temperatures_c=self._temperatures(),
        )

    def _kept_defects(self) -> dict[int, Defects] | None:
        """The bad rows, columns and cells of the health report this server keeps (what
        allocation avoids); None without one (or an unreadable one, logged)."""
        text = self.db.get_meta(HEALTH_META_KEY)
        if text is None:
            return None
        try:
            return defects_from_report(json.loads(text))
        except ValueError as exc:
            log.warning("health_report_unreadable", error=str(exc))
            return None

    def _reserve(self, client: str, msg: ReserveRequest, now: float) -> ReserveReply:
        """Grant, take back or queue run ``msg.run_id``'s regions (persisted when granted)."""
        others = [x.region for x in self.leases.all() if x.client != client]
        was = self.reservations.held.get((client, msg.run_id))
        res, position, why = self.reservations.request(
            client, msg.run_id, msg.matrices, msg.seed, wait=msg.wait, now=now, others=others,
            defects=self._kept_defects(),
        )  # fmt: skip
        ttl = self.reservations.ttl_s
        if res is None:
            return ReserveReply(
                request_id=msg.request_id,
                run_id=msg.run_id,
                granted=False,
                position=position,
                waiting_for=why,
                ttl_s=ttl,
            )
        if was is None:
            res.created = time.time()
            with self.db.transaction() as c:
                c.executemany(
                    "INSERT OR REPLACE INTO reservations(reservation_id, identity, run_id, "
                    "name, chip, row0, row1, col0, col1, whole_chip, created, expires, seed) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            f"{res.reservation_id}/{name}",
                            client,
                            res.run_id,
                            name,
                            g.chip,
                            g.row0,
                            g.row1,
                            g.col0,
                            g.col1,
                            int(name in res.whole),
                            res.created,
                            res.created + ttl,
                            res.seed,
                        )
                        for name, g in res.regions.items()
                    ],
                )
                for g in res.regions.values():
                    self.audit.record(client, res.run_id, msg.kind, g, 0, "ok", msg.request_id)
            log.info(
                "reservation_granted",
                reservation_id=res.reservation_id,
                client=client,
                run_id=res.run_id,
                regions={k: str(v) for k, v in res.regions.items()},
            )
        return ReserveReply(
            request_id=msg.request_id,
            run_id=res.run_id,
            granted=True,
            reservation_id=res.reservation_id,
            regions=res.regions,
            ttl_s=ttl,
        )

    def _temperatures(self) -> dict[str, float]:
        out = {}
        for key, attr in (("board", "temperature_c"), ("lab", "lab_temperature_c")):
            fn = getattr(self.driver, attr, None)
            if callable(fn):
                try:
                    out[key] = float(fn())
                except Exception:  # noqa: BLE001 - a thermometer failing must not fail status
                    continue
        return out

    def _state_changing(
        self,
        client: str,
        msg: PulseRequest | ResetRequest | ProgramRequest | AdvanceRequest,
        arrays: dict[str, np.ndarray],
        now: float,
    ) -> PulseReply | ResetReply | ProgramReply | AdvanceReply:
        """Apply once: reply record, journal, wear and audit commit before the reply."""
        d, rid, kind = self.driver, msg.request_id, msg.kind
        region = None if isinstance(msg, AdvanceRequest) else msg.region
        fp = fingerprint(
            kind,
            msg.model_dump_json(exclude={"request_id", "arrays", "version"}),
            *(arrays[k] for k in sorted(arrays)),
        )  # of the arrays as they travelled (sparse or dense): a retry is byte for byte
        if isinstance(msg, PulseRequest) and "pulse_index" in arrays:
            arrays = self._dense_pulses(msg, arrays)
        with self.db.transaction():
            # a retry of a request applied before a conflicting lease was granted still
            # gets its original reply (nothing is applied)
            rep = self.replies.get(client, rid, kind, fp)
            if rep is None:
                self.leases.check(client, region, write=True, now=now)
                tenant = self._tenant(client, region)
                if region is not None or tenant is None or not d.isolates_tenants:
                    # a tenant's advance on an isolating driver moves only its own clock
                    self.reservations.check(client, region, f"{kind}")
                drid = driver_request_id(client, rid)
                applied = d.recorded_reply(drid) is None
                with d.tenant(tenant):
                    report = self._apply(msg, arrays, drid)
                self.replies.put(client, rid, kind, fp, report)
                pulses = self._wear(client, msg, arrays, report) if applied else 0
                self.audit.record(client, "", kind, region, pulses, "ok", rid)
                rep = report
        if isinstance(msg, PulseRequest) and isinstance(rep, PulseReport):
            return PulseReply(request_id=rid, report=rep)
        if isinstance(msg, ResetRequest) and isinstance(rep, ResetReport):
            return ResetReply(request_id=rid, report=rep)
        if isinstance(msg, ProgramRequest) and isinstance(rep, ProgramReport):
            return ProgramReply(request_id=rid, report=rep)
        if isinstance(rep, AdvanceReport):
            return AdvanceReply(request_id=rid, report=rep)
        raise DeviceError(f"recorded reply of {rid!r} is a {type(rep).__name__}, not a {kind}")

    def _dense_pulses(
        self, msg: PulseRequest, arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The arrays of a sparse pulse request with ``counts`` dense (uint8), as a dense
        request would carry them: the driver, the wear ledger and every metric see the
        same counts either way."""
        region = self.driver._check_region(msg.region)  # noqa: SLF001 - bounds the allocation
        shape = (*region.shape, self.driver.info().devices_per_cell)
        dense = {"counts": dense_counts(arrays["pulse_index"], arrays["pulse_count"], shape)}
        if "reset_mask" in arrays:
            dense["reset_mask"] = arrays["reset_mask"]
        return dense

    def _apply(
        self,
        msg: PulseRequest | ResetRequest | ProgramRequest | AdvanceRequest,
        arrays: dict[str, np.ndarray],
        drid: str,
    ) -> Report:
        d = self.driver
        if isinstance(msg, PulseRequest):
            return d.apply_pulses(
                msg.region, arrays["counts"], arrays.get("reset_mask"), request_id=drid
            )
        if isinstance(msg, ResetRequest):
            return d.reset(msg.region, request_id=drid)
        if isinstance(msg, ProgramRequest):
            return d.program(
                msg.region,
                arrays["target_us"],
                tolerance_us=msg.tolerance_us,
                max_iterations=msg.max_iterations,
                request_id=drid,
            )
        t_s = d.advance(msg.dt_s, request_id=drid)
        return d.recorded_reply(drid) or AdvanceReport(time_s=t_s)

    def _wear(
        self,
        client: str,
        msg: PulseRequest | ResetRequest | ProgramRequest | AdvanceRequest,
        arrays: dict[str, np.ndarray],
        rep: Report,
    ) -> int:
        """Wear rows of an applied request; returns its SET pulse count."""
        rid = msg.request_id
        if isinstance(msg, PulseRequest) and isinstance(rep, PulseReport):
            mask = arrays.get("reset_mask")
            self.wear.record(
                client, "", rid, msg.kind, msg.region, rep.set_pulses, rep.resets,
                np.asarray(arrays["counts"]), None if mask is None else np.asarray(mask),
            )  # fmt: skip
            return rep.set_pulses
        if isinstance(msg, ResetRequest | ProgramRequest):  # every device of the region RESET
            pulses = rep.pulses if isinstance(rep, ProgramReport) else 0
            n = msg.region.rows * msg.region.cols * self.driver.info().devices_per_cell
            self.wear.record(client, "", rid, msg.kind, msg.region, pulses, n)
            return pulses
        return 0


class _Call(NamedTuple):
    """One request as its handler sees it."""

    client: str
    msg: RequestMessage
    arrays: dict[str, np.ndarray]
    now: float
    token: str


_HANDLERS: dict[type[Any], Callable[[DeviceServer, _Call], list[bytes | memoryview]]] = {
    Hello: DeviceServer._on_hello,
    InfoRequest: DeviceServer._on_info,
    Heartbeat: DeviceServer._on_heartbeat,
    TimeRequest: DeviceServer._on_time,
    StatusRequest: DeviceServer._on_status,
    LeaseAcquire: DeviceServer._on_lease_acquire,
    LeaseRelease: DeviceServer._on_lease_release,
    LeasesRequest: DeviceServer._on_leases,
    AuditRequest: DeviceServer._on_audit,
    WearRequest: DeviceServer._on_wear,
    HealthRequest: DeviceServer._on_health,
    HealthPut: DeviceServer._on_health_put,
    ReserveRequest: DeviceServer._on_reserve,
    ReserveRelease: DeviceServer._on_reserve_release,
    MvmRequest: DeviceServer._on_mvm,
    ReadRequest: DeviceServer._on_read,
    PulseRequest: DeviceServer._on_state_changing,
    ResetRequest: DeviceServer._on_state_changing,
    ProgramRequest: DeviceServer._on_state_changing,
    AdvanceRequest: DeviceServer._on_state_changing,
}
"""Request model -> handler: the server's dispatch table (every request kind)."""


def with_state_dir(driver_url: str, state_dir: str | Path | None) -> str:
    """``driver_url`` with ``state_dir`` added to a ``sim://`` query (``--state-dir``).

    Other drivers keep their chip state themselves; for them the server alone keeps its
    records (replies, leases, reservations, wear, audit) in ``state_dir``."""
    parts = urlsplit(driver_url)
    if state_dir is not None and parts.scheme in ("tcp", "ipc", "inproc"):
        raise InvalidRequest(
            f"--state-dir does not apply to {parts.scheme}:// drivers: that is another "
            f"server, which keeps its own state; use it with sim:// or board:// drivers"
        )
    if state_dir is None or parts.scheme != "sim":
        return driver_url
    query = parse_qs(parts.query)
    if "state_dir" in query and query["state_dir"][-1] != str(state_dir):
        raise InvalidRequest(f"{driver_url!r} already names state_dir {query['state_dir'][-1]}")
    query["state_dir"] = [str(state_dir)]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// binds on a loopback address."""
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp":
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: assume reachable


def run_server(
    driver_url: str,
    binds: Sequence[str],
    *,
    state_dir: str | Path | None = None,
    salvage: bool = False,
    on_salvaged: Any = None,
    auth_keys_dir: str | Path | None = None,
    server_secret_key: str | Path | None = None,
    lease_ttl_s: float = 10.0,
    heartbeat_interval_s: float = 1.0,
    insecure: bool = False,
    max_leases: int = 256,
    on_ready: Any = None,
    reservation_ttl_s: float = 600.0,
    max_reservations: int = 16,
) -> None:
    """Open the driver, serve it until SIGINT/SIGTERM, then close it (persisting state).

    ``salvage``: first copy what passes the checks out of a damaged state database
    (:func:`drivers.salvage.salvage`) and pass the report to ``on_salvaged(report)``.
    ``on_ready(endpoints)`` is called once the sockets are bound (the CLI prints them).
    """
    from drivers import open_driver

    if salvage:
        if state_dir is None:
            raise InvalidRequest("--salvage needs --state-dir (the state to salvage)")
        from drivers.salvage import salvage as run_salvage

        report = run_salvage(state_dir)
        if on_salvaged is not None:
            on_salvaged(report)
    if auth_keys_dir is None and not insecure:
        exposed = [b for b in binds if not is_loopback(b)]
        if exposed:
            print(
                f"hil serve: warning: {', '.join(exposed)} is reachable from other machines "
                f"without authentication: anyone there can pulse the chips. Use --auth-keys "
                f"(CURVE), bind 127.0.0.1 or ipc://, or pass --insecure to silence this.",
                file=sys.stderr,
                flush=True,
            )
    url = with_state_dir(driver_url, state_dir)
    own_db = None
    if state_dir is not None and url == driver_url:  # a driver without chip state of ours
        own_db = StateDB.open(state_dir)
    try:
        driver = open_driver(url)
    except BaseException:
        if own_db is not None:
            own_db.close()
        raise
    try:
        server = DeviceServer(
            driver,
            binds,
            lease_ttl_s=lease_ttl_s,
            heartbeat_interval_s=heartbeat_interval_s,
            auth_keys_dir=auth_keys_dir,
            server_secret_key=server_secret_key,
            state_db=own_db,
            max_leases=max_leases,
            reservation_ttl_s=reservation_ttl_s,
            max_reservations=max_reservations,
        )
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, frame: server.stop())
            # SIGHUP: re-read the --auth-keys folder (keys added or removed while serving)
            previous[signal.SIGHUP] = signal.signal(
                signal.SIGHUP, lambda signum, frame: server.reload_keys()
            )
        try:
            server.serve(on_ready=on_ready)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.close()
    finally:
        driver.close()
        if own_db is not None:
            own_db.close()
