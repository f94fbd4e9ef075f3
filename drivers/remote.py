"""RemoteDriver: the driver contract over ZeroMQ to a ``hil serve`` device server.

A DEALER socket (:class:`~drivers.zmq_link.ZmqLink`: every send and receive has a
deadline) with a stable routing id (so the server recognises this client across
reconnections: leases, idempotent retries). Opening the driver is one probe: a ``hello``
answered within ``connect_timeout_s`` (default 3 s), or one line naming the cause
(nothing listening, CURVE keys needed or refused, another protocol version, the server
busy). Each request then waits ``timeout_s`` for the reply with its ``request_id``; on timeout the socket is rebuilt (lazy-pirate) and the
*same* request is re-sent after an exponential backoff (``backoff_s · 2^(attempt−1)``,
at most ``max_backoff_s``), so a retried state-changing
request is applied at most once by the server. After ``retries`` failed attempts it
raises :class:`~drivers.DeviceTimeout`. A daemon thread sends a heartbeat every
``heartbeat_interval_s`` (from the server's hello) while no other traffic flows, which
keeps this client's leases alive. Error replies become the matching
:class:`~drivers.DriverError` subclass. With CURVE, a refused handshake raises
:class:`~drivers.Unauthorised`.

URL form: ``tcp://host:port?timeout_s=5&retries=5&backoff_s=0.05&max_backoff_s=2&connect_timeout_s=3&server_key=PATH&client_key=PATH``
(``server_key``: the server's public ``.key`` file; ``client_key``: this client's
``.key_secret`` file).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
import zmq
import zmq.auth

from drivers import (
    ERROR_BY_CODE,
    DeviceError,
    DeviceTimeout,
    DeviceUnreachable,
    InvalidRequest,
    LeaseConflict,
    LimitExceeded,
    ReservationLost,
)
from drivers.base import Driver, LinkBytes, check_health_report, new_request_id
from drivers.codes import dac_codes, from_adc_codes, sparse_counts
from drivers.reservations import Reservation
from drivers.zmq_link import Curve, ZmqLink
from protocols import encode
from protocols.framing import MAX_MESSAGE_BYTES
from protocols.messages import (
    STATE_CHANGING_KINDS,
    AdvanceReply,
    AdvanceRequest,
    AuditReply,
    AuditRequest,
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
    LeaseMode,
    LeaseRelease,
    LeaseReleased,
    LeaseReply,
    LeasesReply,
    LeasesRequest,
    MatrixWant,
    MvmReply,
    MvmRequest,
    ProgramReply,
    ProgramRequest,
    PulseReply,
    PulseRequest,
    ReadReply,
    ReadRequest,
    ReplyMessage,
    RequestMessage,
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
from protocols.models import (
    CAP_MVM_CODES,
    CAP_SNAPSHOT,
    AdvanceReport,
    DeviceInfo,
    ProgramReport,
    PulseReport,
    ResetReport,
)
from protocols.region import Region

R = TypeVar("R", bound=ReplyMessage)


class RemoteDriver(Driver):
    """The driver contract served by a remote :class:`~drivers.server.DeviceServer`."""

    keeps_records = False  # the server keeps the wear ledger and the health report
    records_outlive_process = True  # type: ignore[assignment]  # the server's, not ours

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 5,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        connect_timeout_s: float = 3.0,
        server_key: str | Path | None = None,
        client_key: str | Path | None = None,
        client_name: str = "",
        context: zmq.Context | None = None,
        heartbeats: bool = True,
        session_file: str | Path | None = None,
        poll_s: float = 0.5,
    ) -> None:
        super().__init__()
        if timeout_s <= 0 or connect_timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise InvalidRequest(
                f"timeout_s={timeout_s} and connect_timeout_s={connect_timeout_s} must be "
                f"> 0, retries={retries} and backoff_s={backoff_s} >= 0"
            )
        self.endpoint = endpoint
        if not max_backoff_s >= backoff_s:
            raise InvalidRequest(
                f"max_backoff_s={max_backoff_s} must be >= backoff_s={backoff_s} (the longest "
                f"wait between two attempts of a request)"
            )
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.max_backoff_s = max_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self.routing_id = f"c-{uuid.uuid4().hex[:16]}".encode()
        self._ctx = context or zmq.Context.instance()
        self._lock = threading.RLock()
        self._curve = self._load_curve(server_key, client_key)
        self._link: ZmqLink | None = None
        self._last_sent = 0.0
        self._bytes_sent = self._bytes_received = 0
        if not poll_s > 0:
            raise InvalidRequest(f"poll_s={poll_s} must be > 0 s")
        self.poll_s = poll_s
        self._runs: set[str] = set()  # run ids whose reservations this client holds
        self._lost: set[str] = set()  # ... that a heartbeat reply says are gone
        self._leases: set[str] = set()  # lease ids this client holds
        self._leases_lost = 0  # how many of them a heartbeat reply says lapsed
        self._session_file = None if session_file is None else Path(session_file)
        resume = None
        if self._session_file is not None and self._session_file.is_file():
            resume = self._session_file.read_text().strip() or None
        self._connect()
        try:
            hello = self._probe(client_name, resume)
        except BaseException:
            self._disconnect()
            raise
        self.client_id: str = hello.client_id
        self.session: str = hello.session  # secret: sent in every request, never logged
        self.lease_ttl_s: float = hello.lease_ttl_s
        self._hello_info: DeviceInfo = hello.info
        self.heartbeat_interval_s: float = hello.heartbeat_interval_s
        self._stop = threading.Event()
        self._hb: threading.Thread | None = None
        if heartbeats:
            self._hb = threading.Thread(
                target=self._heartbeat_loop, daemon=True, name=f"hil-heartbeat-{self.client_id}"
            )
            self._hb.start()

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (1 = the first retry):
        ``min(backoff_s · 2^(attempt−1), max_backoff_s)``. Capped, so a client with many
        retries keeps probing a server that is down instead of sleeping for minutes
        (without the cap, retry 12 of 50 ms would wait 102 s)."""
        return min(self.backoff_s * 2.0 ** min(attempt - 1, 64), self.max_backoff_s)

    @classmethod
    def from_url(cls, url: str) -> RemoteDriver:
        parts = urlsplit(url)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {
            "timeout_s",
            "retries",
            "backoff_s",
            "max_backoff_s",
            "connect_timeout_s",
            "server_key",
            "client_key",
            "name",
            "session_file",
            "poll_s",
        }
        if unknown := set(q) - known:
            raise InvalidRequest(
                f"unknown option(s) {sorted(unknown)} in {url!r}; known: {sorted(known)}"
            )
        endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}"
        try:
            return cls(
                endpoint,
                timeout_s=float(q.get("timeout_s", 5.0)),
                retries=int(q.get("retries", 5)),
                backoff_s=float(q.get("backoff_s", 0.05)),
                max_backoff_s=float(q.get("max_backoff_s", 2.0)),
                connect_timeout_s=float(q.get("connect_timeout_s", 3.0)),
                server_key=q.get("server_key"),
                client_key=q.get("client_key"),
                client_name=q.get("name", ""),
                session_file=q.get("session_file"),
                poll_s=float(q.get("poll_s", 0.5)),
            )
        except ValueError as exc:
            raise InvalidRequest(f"bad option value in {url!r}: {exc}") from None

    # ------------------------------------------------------------ transport
    @staticmethod
    def _load_curve(server_key: Any, client_key: Any) -> Curve | None:
        if server_key is None and client_key is None:
            return None
        if server_key is None or client_key is None:
            raise InvalidRequest(
                "CURVE needs both server_key (server's .key) and client_key "
                "(this client's .key_secret)"
            )
        for p in (server_key, client_key):
            if not Path(p).is_file():
                raise InvalidRequest(f"key file {p} not found (create with 'hil keys generate')")
        server_public, _ = zmq.auth.load_certificate(str(server_key))
        public, secret = zmq.auth.load_certificate(str(client_key))
        if secret is None:
            raise InvalidRequest(
                f"client_key {client_key} holds no secret key; pass the .key_secret file"
            )
        return server_public, public, secret

    def _connect(self) -> None:
        self._link = ZmqLink(self._ctx, self.endpoint, self.routing_id, self._curve)

    def _disconnect(self) -> None:
        if self._link is not None:
            self._bytes_sent += self._link.bytes_sent
            self._bytes_received += self._link.bytes_received
            self._link.close()
            self._link = None

    def _probe(self, client_name: str, session: str | None = None) -> HelloReply:
        """Say hello once and wait at most ``connect_timeout_s``; every failure is one line
        with its cause (nothing listening, CURVE refused, other version, server busy).
        ``session``: a token of an earlier session to be that client again."""
        msg = Hello(request_id=new_request_id(), client=client_name, session=session)
        link, budget = self._link, self.connect_timeout_s
        assert link is not None
        deadline = time.monotonic() + budget
        reply = None
        if link.send(encode(msg), deadline):
            self._last_sent = time.monotonic()
            while reply is None and time.monotonic() < deadline:
                reply = link.recv(msg.request_id, min(deadline, time.monotonic() + 0.05))
                if reply is None and link.refusals and not link.connections:
                    raise DeviceUnreachable(
                        f"nothing is listening at {self.endpoint} (connection refused): is "
                        f"'hil serve' running there, on that address?"
                    )
        if reply is not None:
            return self._unwrap(reply, HelloReply)[0]
        if link.handshakes:
            raise DeviceTimeout(
                f"{self.endpoint} accepted the connection but did not answer hello within "
                f"{budget:g} s: the server is busy (or stalled); retry later or raise "
                f"connect_timeout_s"
            )
        if link.connections:
            raise DeviceTimeout(
                f"{self.endpoint} accepted the connection but no ZeroMQ handshake completed "
                f"within {budget:g} s: is that a 'hil serve'?"
            )
        raise DeviceUnreachable(
            f"no connection to {self.endpoint} within {budget:g} s"
            + (" (connection refused)" if link.refusals else " (host down or filtered?)")
            + ": is 'hil serve' running there, on that address?"
        )

    def _call(
        self,
        msg: RequestMessage,
        expect: type[R],
        arrays: dict[str, np.ndarray] | None = None,
        *,
        attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[R, dict[str, np.ndarray]]:
        """Send ``msg``, wait for the reply with its id; retry with backoff; raise on error.

        Each attempt has one deadline, ``timeout_s`` after it starts, for both the send
        (which waits for the socket to accept the frames) and the reply. The reply must be an ``expect`` (or an error reply, raised as its
        :class:`~drivers.DriverError`); any other kind is a :class:`~drivers.DeviceError`.
        """
        session = getattr(self, "session", "")
        if session and msg.session != session and not isinstance(msg, Hello):
            msg = msg.model_copy(update={"session": session})
        frames = encode(msg, arrays)
        size = sum(len(f) for f in frames)
        if size > MAX_MESSAGE_BYTES:  # the server could not even answer it (docs/protocol.md)
            raise LimitExceeded(
                f"a {msg.kind} request of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte "
                f"message bound of the wire protocol; split it"
            )
        attempts = self.retries + 1 if attempts is None else attempts
        timeout_s = timeout_s or self.timeout_s
        with self._lock:
            if self._link is None:
                raise DeviceError(f"RemoteDriver to {self.endpoint} is closed")
            for attempt in range(attempts):
                if attempt:
                    self._log.warning(
                        "device_retry",
                        msg=f"device unreachable, retrying {attempt + 1}/{attempts}",
                        endpoint=self.endpoint,
                        kind=msg.kind,
                        request_id=msg.request_id,
                        timeout_s=timeout_s,
                    )
                    time.sleep(self._backoff(attempt))
                    self._disconnect()
                    self._connect()
                assert self._link is not None
                deadline = time.monotonic() + timeout_s
                if self._link.send(frames, deadline):
                    self._last_sent = time.monotonic()
                    reply = self._link.recv(msg.request_id, deadline)
                    if reply is not None:
                        return self._unwrap(reply, expect)
            # drop the unsent copy so it cannot reach a server that comes back later
            self._disconnect()
            self._connect()
            raise DeviceTimeout(
                f"no reply from {self.endpoint} to {msg.kind} {msg.request_id} after "
                f"{attempts} attempt(s) of {timeout_s:g} s; is 'hil serve' running there?"
                + (
                    " The request may have been applied: repeat it with the same request_id "
                    "once the server is back; it is never applied twice."
                    if msg.kind in STATE_CHANGING_KINDS
                    else ""
                )
            )

    def _unwrap(
        self, reply: tuple[ReplyMessage, dict[str, np.ndarray]], expect: type[R]
    ) -> tuple[R, dict[str, np.ndarray]]:
        msg, arrays = reply
        if isinstance(msg, ErrorReply):
            raise ERROR_BY_CODE.get(msg.code, DeviceError)(msg.message)
        if not isinstance(msg, expect):
            raise DeviceError(
                f"{self.endpoint} answered a {msg.kind!r} message where a "
                f"{expect.model_fields['kind'].default!r} reply was due"
            )
        return msg, arrays

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s / 2):
            if time.monotonic() - self._last_sent < self.heartbeat_interval_s / 2:
                continue
            # a request in flight is traffic enough: never queue behind it
            if not self._lock.acquire(blocking=False):
                continue
            try:  # one short attempt: a slow heartbeat must not hold up close()
                rep = self._call(
                    Heartbeat(request_id=new_request_id()),
                    HeartbeatReply,
                    attempts=1,
                    timeout_s=min(self.timeout_s, self.heartbeat_interval_s),
                )[0]
                self._heard(rep)
            except Exception:  # noqa: BLE001 - heartbeats are best effort
                continue
            finally:
                self._lock.release()

    def _heard(self, rep: HeartbeatReply) -> None:
        """Act on a heartbeat reply: a run whose reservation the server no longer holds is
        lost; the next request raises :class:`~drivers.ReservationLost`."""
        gone = self._runs - set(rep.runs)
        if gone:
            self._lost |= gone
            self._runs -= gone
        if rep.leases < len(self._leases):
            self._leases_lost = len(self._leases) - rep.leases
            self._leases.clear()

    def heartbeat(self) -> HeartbeatReply:
        """One heartbeat now (the background thread sends them when idle)."""
        rep = self._call(Heartbeat(request_id=new_request_id()), HeartbeatReply)[0]
        self._heard(rep)
        return rep

    def _check_reservations(self) -> None:
        if self._leases_lost:
            n, self._leases_lost = self._leases_lost, 0
            raise ReservationLost(
                f"the server at {self.endpoint} says {n} lease(s) of this client lapsed "
                f"(silent longer than the lease TTL); take them again before using the region"
            )
        if self._lost:
            runs = ", ".join(sorted(self._lost))
            raise ReservationLost(
                f"the server at {self.endpoint} no longer holds the reservation of run "
                f"{runs} (it lapsed after this client was silent too long, or the server "
                f"lost its state); stopping: resume the run to reserve and check it again"
            )

    # ------------------------------------------------------------ reservations
    def reserve(
        self,
        run_id: str,
        wants: Sequence[MatrixWant],
        *,
        seed: int | None = None,
        wait: bool = True,
        on_wait: Callable[[int, str], None] | None = None,
    ) -> Reservation:
        """Ask the server for run ``run_id``'s regions; while they are held by others,
        wait in its FIFO queue (polling every ``poll_s``; ``on_wait(position, why)`` when
        the position changes), or raise ``LeaseConflict`` at once with ``wait=False``."""
        self._check_open()
        last = None
        while True:
            msg = ReserveRequest(
                request_id=new_request_id(), run_id=run_id, matrices=tuple(wants), seed=seed,
                wait=wait,
            )  # fmt: skip
            rep = self._call(msg, ReserveReply)[0]
            if rep.granted:
                self._runs.add(run_id)
                self._lost.discard(run_id)
                return Reservation(
                    rep.reservation_id, self.client_id, run_id, dict(rep.regions), seed
                )
            if not wait:  # pragma: no cover - the server refuses instead
                raise LeaseConflict(f"run {run_id}: {rep.waiting_for}")
            try:
                if on_wait is not None and (rep.position, rep.waiting_for) != last:
                    on_wait(rep.position, rep.waiting_for)
                last = (rep.position, rep.waiting_for)
                time.sleep(self.poll_s)
            except BaseException:  # Ctrl-C while queued: give the place up at once
                try:
                    self.release_reservation(run_id)
                except Exception:  # noqa: BLE001 - the queue entry also lapses by itself
                    pass
                raise

    def release_reservation(self, run_id: str) -> None:
        msg = ReserveRelease(request_id=new_request_id(), run_id=run_id)
        self._call(msg, ReserveReleased)
        self._runs.discard(run_id)
        self._lost.discard(run_id)

    def resume_token(self) -> str | None:
        return self.session or None

    # ------------------------------------------------------------ leases
    def acquire_lease(self, region: Region, mode: LeaseMode = "write") -> str:
        """Take a ``read`` or ``write`` lease on ``region``; returns the lease id."""
        region = self._check_region(region)
        if mode not in ("read", "write"):
            raise InvalidRequest(f"lease mode {mode!r} must be 'read' or 'write'")
        msg = LeaseAcquire(request_id=new_request_id(), region=region, mode=mode)
        lease_id = self._call(msg, LeaseReply)[0].lease_id
        self._leases.add(lease_id)
        return lease_id

    def release_lease(self, lease_id: str) -> None:
        self._call(LeaseRelease(request_id=new_request_id(), lease_id=lease_id), LeaseReleased)
        self._leases.discard(lease_id)

    def leases(self) -> dict[str, list[dict[str, Any]]]:
        """This client's own live leases and run reservations (the ``leases`` verb), as
        ``{"leases": [...], "reservations": [...]}`` of JSON-able dicts."""
        rep = self._call(LeasesRequest(request_id=new_request_id()), LeasesReply)[0]
        return rep.model_dump(mode="json", include={"leases", "reservations"})

    @contextmanager
    def lease(self, region: Region, mode: LeaseMode = "write") -> Iterator[str]:
        """``with remote.lease(region): ...`` holds a lease for the block."""
        lease_id = self.acquire_lease(region, mode)
        try:
            yield lease_id
        finally:
            self.release_lease(lease_id)

    # ------------------------------------------------------------ records
    def audit(
        self,
        *,
        since: float | None = None,
        identity: str | None = None,
        region: Region | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """The server's audit trail (oldest first) as dicts of ``AuditRow`` fields."""
        msg = AuditRequest(
            request_id=new_request_id(),
            since=since,
            identity=identity,
            region=region,
            limit=limit,
        )
        return [r.model_dump() for r in self._call(msg, AuditReply)[0].rows]

    def status(self) -> dict[str, Any]:
        """The server's status (``hil status``): clients, leases, rates, chip use."""
        rep = self._call(StatusRequest(request_id=new_request_id()), StatusReply)[0]
        return rep.model_dump(mode="json", exclude={"version", "arrays", "request_id", "kind"})

    def wear(self, region: Region) -> tuple[np.ndarray, np.ndarray]:
        """``(set_pulses, resets)`` per device of ``region`` from the server's wear ledger."""
        region = self._check_region(region)
        arrays = self._call(WearRequest(request_id=new_request_id(), region=region), WearReply)[1]
        return arrays["set_pulses"], arrays["resets"]

    def health_report(self) -> dict[str, Any] | None:
        """The latest health report the server keeps, or None."""
        self._check_open()
        arrays = self._call(HealthRequest(request_id=new_request_id()), HealthReply)[1]
        if "report" not in arrays:
            return None
        try:
            return dict(json.loads(np.asarray(arrays["report"], np.uint8).tobytes()))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DeviceError(
                f"{self.endpoint} sent a health report that is not JSON: {exc}"
            ) from None

    def keep_health_report(self, report: dict[str, Any]) -> None:
        """Have the server keep ``report`` as the device's latest health report."""
        self._check_open()
        text = check_health_report(report)
        buf = np.frombuffer(text.encode(), np.uint8)
        self._call(HealthPut(request_id=new_request_id()), HealthReply, {"report": buf})

    # ------------------------------------------------------------ hooks
    def _info(self) -> DeviceInfo:
        # snapshot/restore is an in-process capability of the served driver, not of this one
        return self._hello_info.model_copy(
            update={"capabilities": self._hello_info.capabilities - {CAP_SNAPSHOT}}
        )

    def refresh_info(self) -> DeviceInfo:
        """Ask the server again (e.g. after it restarted with another device)."""
        self._hello_info = self._call(InfoRequest(request_id=new_request_id()), InfoReply)[0].info
        self._info_cache = self._info()
        return self._info_cache

    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray:
        self._check_reservations()
        msg = MvmRequest(
            request_id=new_request_id(),
            region=region,
            transpose=transpose,
            session=getattr(self, "session", None) or None,
        )
        if self._hello_info.has(CAP_MVM_CODES):  # 1-byte codes each way (drivers/codes.py)
            reply, arrays = self._call(msg, MvmReply, {"x_code": dac_codes(x)})
            if reply.y_lsb_us is None or "y_code" not in arrays:
                raise DeviceError(f"{self.endpoint} answered MVM codes without y_code/y_lsb_us")
            return from_adc_codes(arrays["y_code"], reply.y_lsb_us)
        return self._call(msg, MvmReply, {"x": x})[1]["y"]

    def link_bytes(self) -> LinkBytes:
        """Bytes of every frame sent to and received from the server (retries included)."""
        sent, received = self._bytes_sent, self._bytes_received
        if self._link is not None:
            sent, received = sent + self._link.bytes_sent, received + self._link.bytes_received
        return LinkBytes(sent, received)

    def _read_conductances(self, region: Region) -> np.ndarray:
        self._check_reservations()
        msg = ReadRequest(request_id=new_request_id(), region=region)
        return self._call(msg, ReadReply)[1]["g_us"]

    def _apply_pulses(
        self,
        region: Region,
        counts: np.ndarray,
        reset_mask: np.ndarray | None,
        request_id: str,
    ) -> PulseReport:
        self._check_reservations()
        # pulse counts are small: 1 byte each on the wire when they fit (4 as int32), and
        # sparse (uint32 index + uint8 count per pulsed device) when few devices pulse
        fits = counts.size == 0 or (int(counts.min()) >= 0 and int(counts.max()) <= 255)
        sparse = sparse_counts(counts) if fits else None
        arrays: dict[str, np.ndarray]
        if sparse is not None:
            arrays = {"pulse_index": sparse[0], "pulse_count": sparse[1]}
        else:
            arrays = {"counts": counts.astype(np.uint8) if fits else counts}
        if reset_mask is not None:
            arrays["reset_mask"] = reset_mask
        msg = PulseRequest(request_id=request_id, region=region)
        return self._call(msg, PulseReply, arrays)[0].report

    def _reset(self, region: Region, request_id: str) -> ResetReport:
        self._check_reservations()
        msg = ResetRequest(request_id=request_id, region=region)
        return self._call(msg, ResetReply)[0].report

    def _program(
        self,
        region: Region,
        target_us: np.ndarray,
        tolerance_us: float,
        max_iterations: int,
        request_id: str,
    ) -> ProgramReport:
        self._check_reservations()
        msg = ProgramRequest(
            request_id=request_id,
            region=region,
            tolerance_us=tolerance_us,
            max_iterations=max_iterations,
        )
        return self._call(msg, ProgramReply, {"target_us": target_us})[0].report

    def _advance(self, dt_s: float, request_id: str) -> AdvanceReport:
        self._check_reservations()
        msg = AdvanceRequest(request_id=request_id, dt_s=dt_s)
        return self._call(msg, AdvanceReply)[0].report

    def _time_s(self) -> float:
        return self._call(TimeRequest(request_id=new_request_id()), TimeReply)[0].time_s

    def _close(self) -> None:
        if getattr(self, "_stop", None) is not None:
            self._stop.set()
        hb: threading.Thread | None = getattr(self, "_hb", None)
        if hb is not None:
            hb.join(timeout=2)
        with self._lock:
            self._disconnect()
