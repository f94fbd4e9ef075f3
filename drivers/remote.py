"""RemoteDriver: the driver contract over ZeroMQ to a ``hil serve`` device server.

A DEALER socket with a stable routing id (so the server recognises this client across
reconnections: leases, idempotent retries). Each request waits ``timeout_s`` for the
reply with its ``request_id``; on timeout the socket is rebuilt (lazy-pirate) and the
*same* request is re-sent after an exponential backoff, so a retried state-changing
request is applied at most once by the server. After ``retries`` failed attempts it
raises :class:`~drivers.DeviceTimeout`. A daemon thread sends a heartbeat every
``heartbeat_interval_s`` (from the server's hello) while no other traffic flows, which
keeps this client's leases alive. Error replies become the matching
:class:`~drivers.DriverError` subclass. With CURVE, a refused handshake raises
:class:`~drivers.Unauthorised`.

URL form: ``tcp://host:port?timeout_s=5&retries=5&server_key=PATH&client_key=PATH``
(``server_key``: the server's public ``.key`` file; ``client_key``: this client's
``.key_secret`` file).
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from drivers import (
    ERROR_BY_CODE,
    DeviceError,
    DeviceTimeout,
    InvalidRequest,
    Unauthorised,
    VersionMismatch,
)
from drivers.base import Driver, new_request_id
from protocols import ProtocolError, VersionMismatchError, encode
from protocols.framing import decode_reply
from protocols.messages import (
    STATE_CHANGING_KINDS,
    AdvanceRequest,
    AuditRequest,
    ErrorReply,
    Heartbeat,
    Hello,
    InfoRequest,
    LeaseAcquire,
    LeaseRelease,
    MvmRequest,
    ProgramRequest,
    PulseRequest,
    ReadRequest,
    ResetRequest,
    TimeRequest,
    WearRequest,
)
from protocols.models import CAP_SNAPSHOT, DeviceInfo, ProgramReport, PulseReport, ResetReport
from protocols.region import Region

_AUTH_FAIL_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


COPY_THRESHOLD = 4 * 2**20
"""Frames below this many bytes are copied when sent: pyzmq's zero-copy path hands every
sent buffer to a garbage-collector thread, which costs more than copying an MVM's arrays."""


class RemoteDriver(Driver):
    """The driver contract served by a remote :class:`~drivers.server.DeviceServer`."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 5,
        backoff_s: float = 0.05,
        server_key: str | Path | None = None,
        client_key: str | Path | None = None,
        client_name: str = "",
        context: zmq.Context | None = None,
        heartbeats: bool = True,
    ) -> None:
        super().__init__()
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise InvalidRequest(
                f"timeout_s={timeout_s} must be > 0, retries={retries} and "
                f"backoff_s={backoff_s} >= 0"
            )
        self.endpoint = endpoint
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.routing_id = f"c-{uuid.uuid4().hex[:16]}".encode()
        self._ctx = context or zmq.Context.instance()
        self._lock = threading.RLock()
        self._curve = self._load_curve(server_key, client_key)
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._last_sent = 0.0
        self._connect()
        try:
            hello = self._call(Hello(request_id=new_request_id(), client=client_name))[0]
        except Exception:
            self._disconnect()
            raise
        self.client_id: str = hello.client_id
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

    @classmethod
    def from_url(cls, url: str) -> RemoteDriver:
        parts = urlsplit(url)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {"timeout_s", "retries", "backoff_s", "server_key", "client_key", "name"}
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
                server_key=q.get("server_key"),
                client_key=q.get("client_key"),
                client_name=q.get("name", ""),
            )
        except ValueError as exc:
            raise InvalidRequest(f"bad option value in {url!r}: {exc}") from None

    # ------------------------------------------------------------ transport
    @staticmethod
    def _load_curve(server_key: Any, client_key: Any) -> tuple[bytes, bytes, bytes] | None:
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
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.copy_threshold = COPY_THRESHOLD
        if self._curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._curve
            self._monitor = sock.get_monitor_socket(_AUTH_FAIL_EVENTS)
        sock.connect(self.endpoint)
        self._sock = sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            if self._monitor is not None:
                self._sock.disable_monitor()
                self._monitor.close(linger=0)
                self._monitor = None
            self._sock.close(linger=0)
            self._sock = None

    def _call(
        self,
        msg: Any,
        arrays: dict[str, np.ndarray] | None = None,
        *,
        attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[Any, dict]:
        """Send ``msg``, wait for the reply with its id; retry with backoff; raise on error."""
        frames = encode(msg, arrays)
        attempts = self.retries + 1 if attempts is None else attempts
        with self._lock:
            if self._sock is None:
                raise DeviceError(f"RemoteDriver to {self.endpoint} is closed")
            for attempt in range(attempts):
                if attempt:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                    self._disconnect()
                    self._connect()
                self._sock.send_multipart(frames, copy=False)
                self._last_sent = time.monotonic()
                reply = self._await(msg.request_id, timeout_s or self.timeout_s)
                if reply is not None:
                    return self._unwrap(reply)
            # drop the unsent copy so it cannot reach a server that comes back later
            self._disconnect()
            self._connect()
            raise DeviceTimeout(
                f"no reply from {self.endpoint} to {msg.kind} {msg.request_id} after "
                f"{attempts} attempt(s) of {timeout_s or self.timeout_s:g} s; is 'hil serve' "
                f"running there?"
                + (
                    " The request may have been applied: repeat it with the same request_id "
                    "once the server is back; it is never applied twice."
                    if msg.kind in STATE_CHANGING_KINDS
                    else ""
                )
            )

    def _await(self, request_id: str, timeout_s: float) -> tuple[Any, dict] | None:
        assert self._sock is not None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(left * 1000))
            if self._monitor is not None and self._monitor in ready:
                event = recv_monitor_message(self._monitor)
                raise Unauthorised(
                    f"{self.endpoint} refused the CURVE handshake (event {event['event']}): "
                    f"this client's public key is not in the server's --auth-keys, or "
                    f"server_key is not the server's public key"
                )
            if self._sock in ready:
                frames = self._sock.recv_multipart(copy=True)
                try:
                    reply = decode_reply(frames)
                except VersionMismatchError as exc:
                    raise VersionMismatch(str(exc)) from None
                except ProtocolError as exc:
                    raise DeviceError(f"malformed reply from {self.endpoint}: {exc}") from None
                if reply[0].request_id in (request_id, "-"):
                    return reply
                # a late reply to an earlier attempt or request: drop it
        return None

    @staticmethod
    def _unwrap(reply: tuple[Any, dict]) -> tuple[Any, dict]:
        msg = reply[0]
        if isinstance(msg, ErrorReply):
            raise ERROR_BY_CODE.get(msg.code, DeviceError)(msg.message)
        return reply

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s / 2):
            if time.monotonic() - self._last_sent < self.heartbeat_interval_s / 2:
                continue
            try:  # one short attempt: a slow heartbeat must not hold up close()
                self._call(
                    Heartbeat(request_id=new_request_id()),
                    attempts=1,
                    timeout_s=min(self.timeout_s, self.heartbeat_interval_s),
                )
            except Exception:  # noqa: BLE001 - heartbeats are best effort
                continue

    # ------------------------------------------------------------ leases
    def acquire_lease(self, region: Region, mode: str = "write") -> str:
        """Take a ``read`` or ``write`` lease on ``region``; returns the lease id."""
        region = self._check_region(region)
        if mode not in ("read", "write"):
            raise InvalidRequest(f"lease mode {mode!r} must be 'read' or 'write'")
        rep = self._call(LeaseAcquire(request_id=new_request_id(), region=region, mode=mode))[0]
        return rep.lease_id

    def release_lease(self, lease_id: str) -> None:
        self._call(LeaseRelease(request_id=new_request_id(), lease_id=lease_id))

    @contextmanager
    def lease(self, region: Region, mode: str = "write"):  # type: ignore[no-untyped-def]
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
        return [r.model_dump() for r in self._call(msg)[0].rows]

    def wear(self, region: Region) -> tuple[np.ndarray, np.ndarray]:
        """``(set_pulses, resets)`` per device of ``region`` from the server's wear ledger."""
        region = self._check_region(region)
        arrays = self._call(WearRequest(request_id=new_request_id(), region=region))[1]
        return arrays["set_pulses"], arrays["resets"]

    # ------------------------------------------------------------ hooks
    def _info(self) -> DeviceInfo:
        # snapshot/restore is an in-process capability of the served driver, not of this one
        return self._hello_info.model_copy(
            update={"capabilities": self._hello_info.capabilities - {CAP_SNAPSHOT}}
        )

    def refresh_info(self) -> DeviceInfo:
        """Ask the server again (e.g. after it restarted with another device)."""
        self._hello_info = self._call(InfoRequest(request_id=new_request_id()))[0].info
        self._info_cache = self._info()
        return self._info_cache

    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray:
        msg = MvmRequest(request_id=new_request_id(), region=region, transpose=transpose)
        return self._call(msg, {"x": x})[1]["y"]

    def _read_conductances(self, region: Region) -> np.ndarray:
        return self._call(ReadRequest(request_id=new_request_id(), region=region))[1]["g_us"]

    def _apply_pulses(self, region, counts, reset_mask, request_id) -> PulseReport:  # type: ignore[no-untyped-def]
        arrays = {"counts": counts}
        if reset_mask is not None:
            arrays["reset_mask"] = reset_mask
        return self._call(PulseRequest(request_id=request_id, region=region), arrays)[0].report

    def _reset(self, region: Region, request_id: str) -> ResetReport:
        return self._call(ResetRequest(request_id=request_id, region=region))[0].report

    def _program(self, region, target_us, tolerance_us, max_iterations, request_id):  # type: ignore[no-untyped-def]
        msg = ProgramRequest(
            request_id=request_id,
            region=region,
            tolerance_us=tolerance_us,
            max_iterations=max_iterations,
        )
        rep: ProgramReport = self._call(msg, {"target_us": target_us})[0].report
        return rep

    def _advance(self, dt_s: float, request_id: str):  # type: ignore[no-untyped-def]
        return self._call(AdvanceRequest(request_id=request_id, dt_s=dt_s))[0].report

    def _time_s(self) -> float:
        return self._call(TimeRequest(request_id=new_request_id()))[0].time_s

    def _close(self) -> None:
        if getattr(self, "_stop", None) is not None:
            self._stop.set()
        if getattr(self, "_hb", None) is not None:
            self._hb.join(timeout=2)
        with self._lock:
            self._disconnect()
