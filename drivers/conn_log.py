"""The server's connection log: ZeroMQ socket-monitor events of the ROUTER as log lines.

- ``client_connected`` (peer address, when the OS still knows it) and
  ``client_disconnected``, at info;
- ``handshake_failed`` at warning, with the cause in words: a client without CURVE keys
  (mechanism mismatch), a client whose ``server_key`` is not this server's public key
  (cannot decrypt), a key the authenticator refused (its Z85 form is in the
  ``client_rejected`` line of :mod:`drivers.auth`). Repeats of one cause within
  :data:`REPEAT_WINDOW_S` are counted, not logged (a client retrying in a loop must not
  flood the log); the next line carries ``repeats``.

Peer addresses are best effort: the accepted file descriptor is read at once, but the OS
may already have closed it.
"""

from __future__ import annotations

import os
import socket
import time

import structlog
import zmq
from zmq.utils.monitor import recv_monitor_message

log = structlog.get_logger(__name__)

EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
REPEAT_WINDOW_S = 5.0

_PROTOCOL_CAUSES = {
    getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002): (
        "security mechanism mismatch: the client offered no CURVE keys (or this server "
        "has none and the client did)"
    ),
    getattr(zmq, "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC", 0x11000001): (
        "cannot decrypt the client's CURVE hello: its server_key is not this server's public key"
    ),
}


def _peer(fd: int) -> str:
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            name = s.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return name or "local"


class ConnectionLog:
    """Monitors ``sock``; :meth:`drain` logs whatever happened since the last call."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.monitor = sock.get_monitor_socket(EVENTS)
        self._sock = sock
        self._peers: dict[int, str] = {}
        self._last: dict[str, tuple[float, int]] = {}

    def drain(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
            kind, value = event["event"], int(event["value"])
            endpoint = event["endpoint"].decode(errors="replace")
            if kind == zmq.EVENT_ACCEPTED:
                self._peers[value] = peer = _peer(value)
                log.info("client_connected", peer=peer, endpoint=endpoint)
            elif kind == zmq.EVENT_DISCONNECTED:
                log.info("client_disconnected", peer=self._peers.pop(value, "?"))
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._failed(
                    endpoint, f"CURVE key refused (ZAP status {value}): see client_rejected"
                )
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._failed(endpoint, _PROTOCOL_CAUSES.get(value, f"ZMTP error {value:#x}"))
            else:
                self._failed(endpoint, f"the client hung up mid-handshake (errno {value})")

    def _failed(self, endpoint: str, cause: str) -> None:
        now = time.monotonic()
        since, repeats = self._last.get(cause, (-REPEAT_WINDOW_S, 0))
        if now - since < REPEAT_WINDOW_S:
            self._last[cause] = (since, repeats + 1)
            return
        self._last[cause] = (now, 0)
        log.warning("handshake_failed", cause=cause, endpoint=endpoint, repeats=repeats)

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:  # pragma: no cover - socket already closed
            pass
        self.monitor.close(linger=0)
