"""One client connection to a ``hil serve``: a DEALER socket whose every wait has a deadline.

:class:`ZmqLink` owns the DEALER socket, its socket monitor and one poller reused for every
wait. Nothing here blocks without a bound:

- :meth:`ZmqLink.send` waits for ``POLLOUT`` until the request's deadline and then sends
  with ``NOBLOCK`` (a DEALER with no ready pipe, e.g. between reconnects after a refused
  CURVE handshake, would otherwise block ``send`` forever); it returns ``False`` when the
  deadline passes first;
- :meth:`ZmqLink.recv` waits for the reply with a given ``request_id`` until the deadline;
- both read the socket monitor while they wait and turn a failed handshake into a typed
  error at once (:class:`~drivers.Unauthorised` with its cause in one line; a peer hanging
  up mid-handshake counts only the second time in a row, as the first may be a server
  killed with the connection in its backlog, which a retry survives), and keep
  count of refused connection attempts (``refusals``) and successful handshakes
  (``handshakes``) so a caller can tell "nothing listening" from "the server is busy".
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import zmq
import zmq.utils.z85
from zmq.utils.monitor import recv_monitor_message

from drivers import DeviceError, Unauthorised, VersionMismatch
from protocols import PROTOCOL_VERSION, ProtocolError, VersionMismatchError
from protocols.framing import decode_reply

COPY_THRESHOLD = 4 * 2**20
"""Frames below this many bytes are copied when sent: pyzmq's zero-copy path hands every
sent buffer to a garbage-collector thread, which costs more than copying an MVM's arrays."""

MONITOR_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CLOSED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)

Curve = tuple[bytes, bytes, bytes]
"""(server public key, client public key, client secret key), Z85 bytes."""


class ZmqLink:
    """A connected DEALER with routing id ``routing_id`` (CURVE when ``curve`` is given)."""

    def __init__(
        self, ctx: zmq.Context, endpoint: str, routing_id: bytes, curve: Curve | None
    ) -> None:
        self.endpoint, self.curve = endpoint, curve
        self.refusals = 0
        """Connection attempts that failed before a TCP/IPC connection existed."""
        self.connections = 0
        self.handshakes = 0
        self.hangups = 0
        """Handshakes in a row the peer hung up on (one is a server that died mid-handshake)."""
        self.bytes_sent = self.bytes_received = 0
        """Bytes of the frames sent and received on this socket."""
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.SNDTIMEO, 0)  # a stray blocking send would raise, never hang
        sock.copy_threshold = COPY_THRESHOLD
        if curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
        self.monitor = sock.get_monitor_socket(MONITOR_EVENTS)
        self.sock = sock
        self.poller = zmq.Poller()
        self.poller.register(self.monitor, zmq.POLLIN)
        self.poller.register(sock, zmq.POLLIN)
        self._polling = int(zmq.POLLIN)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise DeviceError(f"cannot connect to {endpoint!r}: {exc}") from None

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:  # pragma: no cover - already closed
            pass
        self.monitor.close(linger=0)
        self.sock.close(linger=0)

    # ------------------------------------------------------------ waits
    def _poll(self, flags: int, deadline: float) -> bool:
        """Wait until ``sock`` has ``flags`` ready or ``deadline``; reads monitor events."""
        flags = int(flags)  # plain ints: enum.Flag arithmetic costs microseconds per call
        if flags != self._polling:
            self.poller.modify(self.sock, flags)
            self._polling = flags
        while (left := deadline - time.monotonic()) > 0:
            hit = False
            for sock, events in self.poller.poll(max(1, int(left * 1000))):
                if sock is self.monitor:
                    self._drain_monitor()
                elif int(events) & flags:
                    hit = True
            if hit:
                return True
        return False

    def send(self, frames: list[Any], deadline: float) -> bool:
        """Send ``frames`` as soon as the socket can take them; ``False`` at the deadline.

        The first attempt needs no poll: a socket with a ready pipe takes the frames at
        once (``NOBLOCK``); only a refused attempt waits for ``POLLOUT``."""
        ready = True
        while ready or self._poll(zmq.POLLOUT, deadline):
            ready = False
            try:
                self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                self.bytes_sent += sum(len(f) for f in frames)
                return True
            except zmq.Again:  # no ready pipe (yet), or it went away between poll and send
                continue
        return False

    def recv(self, request_id: str, deadline: float) -> tuple[Any, dict[str, np.ndarray]] | None:
        """The decoded reply to ``request_id`` (or with id ``"-"``), or ``None`` at the deadline.

        Late replies to earlier requests are dropped."""
        while self._poll(zmq.POLLIN, deadline):
            frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            self.bytes_received += sum(len(f) for f in frames)
            try:
                reply = decode_reply(frames)
            except VersionMismatchError:
                raise VersionMismatch(self._version_message(frames[0])) from None
            except ProtocolError as exc:
                raise DeviceError(f"malformed reply from {self.endpoint}: {exc}") from None
            if reply[0].request_id in (request_id, "-"):
                return reply
        return None

    def _version_message(self, header: bytes) -> str:
        try:
            theirs = json.loads(header).get("version", "?")
        except (ValueError, AttributeError):
            theirs = "?"
        return (
            f"{self.endpoint} speaks protocol version {theirs}, this client version "
            f"{PROTOCOL_VERSION}: upgrade the older of client and server"
        )

    # ------------------------------------------------------------ monitor
    def _drain_monitor(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
            kind, value = event["event"], int(event["value"])
            if kind == zmq.EVENT_CONNECTED:
                self.connections += 1
            elif kind == zmq.EVENT_CLOSED:  # a connect attempt failed (refused, no such file)
                self.refusals += 1
                self.hangups = 0
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                self.hangups = 0
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # the peer hung up mid-handshake: a server refusing our mechanism or key
                # does so on every attempt, but a server that died (kill -9, crash) with
                # this connection in its backlog does so once, and the next attempt is
                # refused or served. Only a second hang-up in a row is a refusal.
                self.hangups += 1
                if self.hangups >= 2:
                    raise Unauthorised(self._handshake_failure(kind, value))
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                raise Unauthorised(self._handshake_failure(kind, value))

    def _handshake_failure(self, kind: int, value: int) -> str:
        ep = self.endpoint
        mismatch = kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH
        # without keys, a server that hangs up mid-handshake (NO_DETAIL, EPIPE) saw the
        # mechanism mismatch first: between two NULL peers a handshake does not fail
        if mismatch or (kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.curve is None):
            if self.curve is None:
                return (
                    f"{ep} requires CURVE keys: pass server_key=DIR/server.key and "
                    f"client_key=DIR/NAME.key_secret (make a pair with 'hil keys generate')"
                )
            return (
                f"{ep} does not use CURVE (served without --auth-keys) but this client was "
                f"given keys: drop server_key and client_key"
            )
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            assert self.curve is not None
            key = self.curve[1].decode()
            return (
                f"{ep} refused this client's CURVE key {key} (ZAP status {value}): the key is "
                f"unknown to the server; add NAME.key to its --auth-keys folder"
            )
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.curve is not None:
            return (
                f"the CURVE handshake with {ep} failed: server_key is not that server's "
                f"public key, or the server does not use CURVE (served without --auth-keys)"
            )
        return (
            f"the handshake with {ep} failed (libzmq event {kind:#x}, value {value:#x}): "
            f"is a 'hil serve' of this version listening there?"
        )
