"""The device server: a ZeroMQ ROUTER hosting one driver for many clients.

Each request is ``[identity, header_json, *buffers]`` (``docs/protocol.md``). The server

- decodes and validates it (:mod:`protocols.framing`), checks leases
  (:mod:`drivers.leases`), calls the driver and replies; any failure becomes a typed
  ``error`` reply, and input never crashes the loop;
- makes state-changing requests idempotent per client: the driver sees the request id
  namespaced by the client (``client/request_id``), so a retried id returns the original
  reply and applies nothing (durably so with a persisting driver such as SimDriver);
- logs one structlog event per request (request id, client, verb, region, duration);
- optionally requires CURVE (``zmq.auth``): only client public keys found in the
  ``auth_keys`` directory get in; rejected keys are logged.

:meth:`DeviceServer.handle` is the whole request logic without sockets; :meth:`serve`
is the socket loop. The driver is only touched from the loop's thread.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import numpy as np
import structlog
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from drivers import DeviceError, DriverError, InvalidRequest, LeaseConflict
from drivers.auth import KeyRing
from drivers.base import Driver
from drivers.codes import mvm_over_codes
from drivers.conn_log import ConnectionLog
from drivers.leases import LeaseTable
from drivers.zmq_link import COPY_THRESHOLD
from protocols import ProtocolError, encode
from protocols.framing import MAX_ARRAY_BYTES, MAX_HEADER_BYTES, decode_request
from protocols.messages import (
    AdvanceReply,
    AdvanceRequest,
    ErrorReply,
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
    MvmReply,
    MvmRequest,
    ProgramReply,
    ProgramRequest,
    PulseReply,
    PulseRequest,
    ReadReply,
    ReadRequest,
    RequestMessage,
    ResetReply,
    ResetRequest,
    TimeReply,
    TimeRequest,
)
from protocols.models import AdvanceReport

log = structlog.get_logger(__name__)

SERVER_NAME = "pcm-hil device server"


def client_name(identity: bytes) -> str:
    """Printable name of a ROUTER identity (ASCII as is, else hex)."""
    if identity and all(32 < b < 127 for b in identity):
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
    ) -> None:
        self.driver = driver
        self.binds = [bind] if isinstance(bind, str) else list(bind)
        self.leases = LeaseTable(lease_ttl_s)
        self.heartbeat_interval_s = heartbeat_interval_s
        self._ctx = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._auth: ThreadAuthenticator | None = None
        self._keyring: KeyRing | None = None
        self._server_keys: tuple[bytes, bytes] | None = None
        self.bound: list[str] = []
        if auth_keys_dir is not None:
            self._keyring = KeyRing(Path(auth_keys_dir))
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
        # a peer sending a frame larger than any valid array is disconnected by libzmq
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_ARRAY_BYTES + MAX_HEADER_BYTES)
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
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(conn_log.monitor, zmq.POLLIN)
            while not self._stop.is_set():
                events = dict(poller.poll(50))
                if conn_log.monitor in events:
                    conn_log.drain()
                if sock not in events:
                    self._sweep(time.monotonic())
                    continue
                try:
                    frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    continue
                if len(frames) < 2:
                    continue  # an identity with no body: nothing to answer
                reply = self.handle(frames[0], frames[1:], time.monotonic())
                self._send(sock, frames[0], reply)
        finally:
            conn_log.close()
            sock.close()
            if self._auth is not None:
                self._auth.stop()
            log.info("server_stopped")

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

    def _sweep(self, now: float) -> None:
        for lease in self.leases.expire(now):
            log.info(
                "lease_expired",
                lease_id=lease.lease_id,
                client=lease.client,
                region=str(lease.region),
            )

    # ------------------------------------------------------------ request logic
    def handle(
        self, identity: bytes, frames: Sequence[bytes], now: float
    ) -> list[bytes | memoryview]:
        """Reply frames for one request ``frames`` from ``identity``. Never raises."""
        client = client_name(identity)
        t0 = time.perf_counter()
        request_id, verb, region = "-", "?", None
        try:
            msg, arrays = decode_request(frames)
            request_id, verb = msg.request_id, msg.kind
            region = getattr(msg, "region", None)
            self.leases.touch(client, now)
            for lease in self.leases.expire(now):
                log.info("lease_expired", lease_id=lease.lease_id, client=lease.client)
            out = self._dispatch(client, msg, arrays, now)
            code = "ok"
        except (DriverError, ProtocolError) as exc:
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
        fields = {
            "client": client,
            "verb": verb,
            "request_id": request_id,
            "region": None if region is None else str(region),
            "duration_us": round((time.perf_counter() - t0) * 1e6, 1),
            "outcome": code,
        }
        if code == "ok":
            log.info("request", **fields)
        else:
            log.warning("request", **fields)
        return out

    def _dispatch(
        self, client: str, msg: RequestMessage, arrays: dict[str, np.ndarray], now: float
    ) -> list[bytes | memoryview]:
        d, rid = self.driver, msg.request_id
        if isinstance(msg, Hello):
            log.info("client_hello", client=client, name=msg.client, leases=len(self.leases))
            return encode(
                HelloReply(
                    request_id=rid,
                    server=SERVER_NAME,
                    client_id=client,
                    info=d.info(),
                    heartbeat_interval_s=self.heartbeat_interval_s,
                    lease_ttl_s=self.leases.ttl_s,
                )
            )
        if isinstance(msg, InfoRequest):
            return encode(InfoReply(request_id=rid, info=d.info()))
        if isinstance(msg, Heartbeat):
            return encode(HeartbeatReply(request_id=rid, leases=len(self.leases.held_by(client))))
        if isinstance(msg, TimeRequest):
            return encode(TimeReply(request_id=rid, time_s=d.time_s()))
        if isinstance(msg, LeaseAcquire):
            lease = self.leases.acquire(client, msg.region, msg.mode, now)
            return encode(
                LeaseReply(
                    request_id=rid,
                    lease_id=lease.lease_id,
                    region=lease.region,
                    mode=lease.mode,
                    ttl_s=self.leases.ttl_s,
                )
            )
        if isinstance(msg, LeaseRelease):
            self.leases.release(client, msg.lease_id, now)
            return encode(LeaseReleased(request_id=rid, lease_id=msg.lease_id))
        if isinstance(msg, MvmRequest):
            self.leases.check(client, msg.region, write=False, now=now)
            if "x_code" in arrays:  # DAC codes in, ADC codes out (drivers/codes.py)
                y_code, lsb = mvm_over_codes(d, msg.region, arrays["x_code"], msg.transpose)
                return encode(MvmReply(request_id=rid, y_lsb_us=lsb), {"y_code": y_code})
            y = d.mvm(msg.region, arrays["x"], transpose=msg.transpose)
            return encode(MvmReply(request_id=rid), {"y": y})
        if isinstance(msg, ReadRequest):
            self.leases.check(client, msg.region, write=False, now=now)
            g = d.read_conductances(msg.region)
            return encode(ReadReply(request_id=rid), {"g_us": g})
        # state-changing verbs: leases, then the driver's idempotent verb
        drid = driver_request_id(client, rid)
        try:
            self.leases.check(client, getattr(msg, "region", None), write=True, now=now)
        except LeaseConflict:
            # a retry of a request applied before the conflicting lease was granted still
            # gets its original reply (the driver answers it from its record)
            if d.recorded_reply(drid) is None:
                raise
        if isinstance(msg, PulseRequest):
            pulses = d.apply_pulses(
                msg.region, arrays["counts"], arrays.get("reset_mask"), request_id=drid
            )
            return encode(PulseReply(request_id=rid, report=pulses))
        if isinstance(msg, ResetRequest):
            return encode(ResetReply(request_id=rid, report=d.reset(msg.region, request_id=drid)))
        if isinstance(msg, ProgramRequest):
            programmed = d.program(
                msg.region,
                arrays["target_us"],
                tolerance_us=msg.tolerance_us,
                max_iterations=msg.max_iterations,
                request_id=drid,
            )
            return encode(ProgramReply(request_id=rid, report=programmed))
        if isinstance(msg, AdvanceRequest):
            t_s = d.advance(msg.dt_s, request_id=drid)
            return encode(AdvanceReply(request_id=rid, report=AdvanceReport(time_s=t_s)))
        raise InvalidRequest(f"request kind {msg.kind!r} is not served")  # pragma: no cover


def with_state_dir(driver_url: str, state_dir: str | Path | None) -> str:
    """``driver_url`` with ``state_dir`` added to a ``sim://`` query (``--state-dir``)."""
    if state_dir is None:
        return driver_url
    parts = urlsplit(driver_url)
    if parts.scheme != "sim":
        raise InvalidRequest(
            f"--state-dir applies to sim:// drivers only, not {parts.scheme}://; a real "
            f"board keeps its state itself"
        )
    query = parse_qs(parts.query)
    if "state_dir" in query and query["state_dir"][-1] != str(state_dir):
        raise InvalidRequest(f"{driver_url!r} already names state_dir {query['state_dir'][-1]}")
    query["state_dir"] = [str(state_dir)]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def run_server(
    driver_url: str,
    binds: Sequence[str],
    *,
    state_dir: str | Path | None = None,
    auth_keys_dir: str | Path | None = None,
    server_secret_key: str | Path | None = None,
    lease_ttl_s: float = 10.0,
    heartbeat_interval_s: float = 1.0,
    on_ready: Any = None,
) -> None:
    """Open the driver, serve it until SIGINT/SIGTERM, then close it (persisting state).

    ``on_ready(endpoints)`` is called once the sockets are bound (the CLI prints them).
    """
    from drivers import open_driver

    driver = open_driver(with_state_dir(driver_url, state_dir))
    try:
        server = DeviceServer(
            driver,
            binds,
            lease_ttl_s=lease_ttl_s,
            heartbeat_interval_s=heartbeat_interval_s,
            auth_keys_dir=auth_keys_dir,
            server_secret_key=server_secret_key,
        )
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, frame: server.stop())
        try:
            server.serve(on_ready=on_ready)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        driver.close()
