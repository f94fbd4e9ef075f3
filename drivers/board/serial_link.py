"""Serial transport to the board (the only module of ``drivers`` that imports pyserial).

A :class:`SerialLink` sends one command frame and waits for the reply that carries the same
sequence number. Accepted ports are whatever ``serial.serial_for_url`` accepts: device
paths (``/dev/ttyUSB0``, a pty path printed by ``hil board-emulator --pty``) and URLs
(``socket://host:port``, ``rfc2217://host:port``, ``loop://``).

Error handling, per command:

- The reply must decode (COBS, CRC-32, header), carry the command's opcode with the reply
  bit and the request's seq. Anything else is garbage or a stale reply and is skipped; the
  :class:`~drivers.board.framing.Deframer` resynchronises at the next zero byte.
- A reply that does not arrive in time (first byte within ``timeout_s`` times the
  command's ``timeout_scale``, then ``timeout_s`` between bytes, within an overall budget
  that also allows for the frames' transfer time at ``baudrate``) makes the link
  **retransmit the identical frame, same seq**, up to ``retries`` times. The board
  remembers the replies of its recent seqs and answers a retransmission from that memory
  without executing again, so a pulse command is applied exactly once however many
  replies are lost. Idempotent commands may also be reissued later under a new seq;
  non-idempotent ones (pulse, program) are never reissued by the link.
- A garbled frame or the board's NAK (it answers every frame that fails its CRC) while
  waiting means the exchange was damaged: the link retransmits at once. Waits adapt: the
  first-byte wait is ``RTT_FACTOR`` times the smoothed reply time of that opcode (at least
  ``MIN_WAIT_S``, at most ``timeout_s × timeout_scale``), doubling with each silent attempt.
- Attempts: ``1 + retries`` when the board is silent (nothing at all heard during the
  command: a dead line fails fast), up to ``1 + max(retries, NOISY_RETRIES)`` when it is
  heard but damaged (a noisy line keeps trying). Then :class:`DeviceTimeout`.
  ``last_attempts`` tells the caller whether the reply it got answered a retransmission
  (see the session rule in ``docs/board-protocol.md``).
- A port that fails (the emulator or a USB adapter went away) is reopened, for up to
  ``reconnect_s``, and the identical frame is sent again: a board that kept running answers
  it from its reply memory, a restarted one with UNKNOWN_SESSION (the driver resolves it).
"""

from __future__ import annotations

import secrets
import select
import time
from dataclasses import dataclass
from typing import Any

import serial
import structlog

from drivers.board.errors import DeviceTimeout, LinkError
from drivers.board.framing import REPLY_BIT, Deframer, Frame, encode_frame
from drivers.board.layout import NAK_OPCODE

log = structlog.get_logger(__name__)

READ_CHUNK = 1 << 16
"""Most bytes taken from the port per read (the port is non-blocking: timeout=0)."""
POLL_S = 0.001
"""Poll period for ports without a selectable file descriptor (rfc2217://)."""
NOISY_RETRIES = 64
"""Retransmissions allowed while the board is heard but the exchange keeps being damaged."""
RTT_FACTOR = 4.0
MIN_WAIT_S = 0.05
RTT_SMOOTHING = 0.25
RECONNECT_POLL_S = 0.2


@dataclass
class LinkStats:
    """Counters of one link; tests read ``bytes_written`` to prove nothing was sent."""

    bytes_written: int = 0
    bytes_read: int = 0
    frames_sent: int = 0
    replies: int = 0
    retransmissions: int = 0
    bad_frames: int = 0
    stale_frames: int = 0
    naks: int = 0
    reconnects: int = 0


class SerialLink:
    """Request/reply transport over a pyserial port.

    Args:
        port: device path or pyserial URL; or an already open port object with pyserial's
            ``write``/``flush``/``read``/``in_waiting``/``close`` (e.g.
            :class:`drivers.board.testing.ScriptedPort`).
        baudrate: line rate (ignored by ``socket://``; a pty accepts but does not enforce it).
        timeout_s: inter-byte silence after which an attempt is abandoned.
        retries: retransmissions after the first attempt.
        first_seq: seq of the first command (default: random, so two connections of one
            host never share a seq space).
        reconnect_s: how long a failed port is reopened before the link gives up (0: never).
    """

    def __init__(
        self,
        port: str | Any,
        *,
        baudrate: int = 921600,
        timeout_s: float = 0.5,
        retries: int = 3,
        first_seq: int | None = None,
        reconnect_s: float = 10.0,
    ) -> None:
        if timeout_s <= 0 or retries < 0:
            raise LinkError(f"need timeout_s > 0 and retries >= 0, got {timeout_s}, {retries}")
        self.port_name = port if isinstance(port, str) else type(port).__name__
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self.reconnect_s = reconnect_s
        self.stats = LinkStats()
        self._rtt: dict[int, float] = {}
        self.last_attempts = 0
        """Transmissions of the last command (1 = answered without a retransmission)."""
        self.last_heard = False
        """Whether the board was heard at all during the last command (noisy, not dead)."""
        self._deframer = Deframer()
        start = secrets.randbelow(1 << 16) if first_seq is None else first_seq
        self._seq = (start - 1) & 0xFFFF
        self._fd: int | None = None
        self._url: str | None = None
        if not isinstance(port, str):
            self._port = port
            return
        self._url = port
        self._open()

    def _open(self) -> None:
        assert self._url is not None
        try:
            self._port = serial.serial_for_url(
                self._url, baudrate=self.baudrate, timeout=0, write_timeout=self.timeout_s
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(
                f"cannot open board port {self._url!r}: {exc}. Give a device path (/dev/ttyUSB0) "
                "or a pyserial URL (socket://host:port, rfc2217://host:port); is the emulator "
                "running?"
            ) from exc
        try:  # device paths and socket:// can be waited on with select; rfc2217:// cannot
            self._fd = self._port.fileno()
        except (AttributeError, NotImplementedError, OSError, ValueError):
            self._fd = None
        log.debug("board_link_open", port=self._url, baudrate=self.baudrate)

    def _reconnect(self, cause: Exception) -> None:
        """Reopen the port (same URL) until it opens or ``reconnect_s`` has passed."""
        if self._url is None or self.reconnect_s <= 0:
            raise cause
        self._close_port()
        deadline = time.monotonic() + self.reconnect_s
        log.warning(
            "board_link_lost", port=self._url, error=str(cause), retry_for_s=self.reconnect_s
        )
        while True:
            try:
                self._open()
            except LinkError:
                if time.monotonic() >= deadline:
                    raise LinkError(
                        f"board port {self._url!r} failed ({cause}) and did not come back within "
                        f"{self.reconnect_s:g} s; is the board powered and the emulator running?"
                    ) from cause
                time.sleep(RECONNECT_POLL_S)
                continue
            self._deframer.clear()
            self.stats.reconnects += 1
            log.warning("board_link_reconnected", port=self._url)
            return

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _write(self, data: bytes) -> None:
        """Write with a deadline: ``timeout_s`` plus twice the bytes' transfer time. No
        ``flush()`` (``tcdrain``, unbounded on a stalled line): the reply wait covers it."""
        try:
            if hasattr(self._port, "write_timeout"):
                self._port.write_timeout = self.timeout_s + 20.0 * len(data) / self.baudrate
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeout(
                f"write to {self.port_name!r} did not complete in time ({exc}): the line is "
                "stalled (flow control?) or the board is not reading"
            ) from exc
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"write to {self.port_name!r} failed: {exc}") from exc
        self.stats.bytes_written += len(data)

    def _read_some(self, wait_s: float) -> bytes:
        """Wait up to ``wait_s`` for input, then take everything available (non-blocking)."""
        try:
            if self._fd is not None:
                select.select([self._fd], [], [], wait_s)
            elif not self._port.in_waiting:
                time.sleep(min(wait_s, POLL_S))
            data = self._port.read(READ_CHUNK)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"read from {self.port_name!r} failed: {exc}") from exc
        self.stats.bytes_read += len(data)
        return data

    def _await_reply(
        self, opcode: int, seq: int, first_s: float, budget_s: float
    ) -> tuple[Frame | None, bool]:
        """Wait ``first_s`` for the first byte (the board executes before replying), then
        ``timeout_s`` between bytes, and at most ``budget_s`` in all. Returns the reply (or
        None: silence, a garbled frame or a NAK) and whether anything at all was heard."""
        start = last_byte = time.monotonic()
        idle_s = first_s
        heard = False
        while True:
            data = self._read_some(min(idle_s, 0.05))
            now = time.monotonic()
            if data:
                heard = True
                last_byte = now
                idle_s = self.timeout_s
                bad_before = self._deframer.bad_frames
                damaged = False
                for frame in self._deframer.feed(data):
                    if frame.opcode == opcode | REPLY_BIT and frame.seq == seq:
                        self.stats.replies += 1
                        return frame, True
                    if frame.opcode == NAK_OPCODE | REPLY_BIT:
                        self.stats.naks += 1
                        damaged = True
                        continue
                    self.stats.stale_frames += 1
                bad = self._deframer.bad_frames - bad_before
                self.stats.bad_frames += bad
                if damaged or bad:  # our request or its reply was hit: ask again now
                    return None, True
            if now - last_byte > idle_s or now - start > budget_s:
                return None, heard

    def transact(
        self,
        opcode: int,
        payload: bytes,
        *,
        name: str = "",
        idempotent: bool = True,
        reply_bytes_hint: int = 0,
        timeout_scale: float = 1.0,
    ) -> Frame:
        """Send one command and return its reply frame (any status; the caller checks it).

        ``timeout_scale`` stretches ``timeout_s`` for commands the board takes long to
        execute (program-and-verify); ``reply_bytes_hint`` adds the reply's transfer time.
        """
        seq = self.next_seq()
        wire = encode_frame(opcode, seq, 0, payload)
        max_first_s = self.timeout_s * timeout_scale
        transfer_s = 10.0 * (len(wire) + reply_bytes_hint + 16) / self.baudrate
        rtt = self._rtt.get(opcode)
        first_s = (
            max_first_s if rtt is None else min(max_first_s, max(MIN_WAIT_S, RTT_FACTOR * rtt))
        )
        heard_any = False
        self.last_heard = False
        attempt = 0
        silent = False  # the last attempt heard nothing at all
        allowed = 1 + self.retries
        while True:
            self.last_attempts = attempt + 1
            if attempt:
                self.stats.retransmissions += 1
                log.debug("board_retransmit", command=name, seq=seq, attempt=attempt)
            if silent:  # an operator should see a board that stopped answering (#13)
                log.warning(
                    "device_retry",
                    msg=f"device unreachable, retrying {attempt + 1}/{allowed}",
                    port=self.port_name,
                    command=name,
                    seq=seq,
                )
            sent = time.monotonic()
            try:
                self._write(wire)
                self.stats.frames_sent += 1
                reply, heard = self._await_reply(
                    opcode, seq, first_s, first_s + self.timeout_s + 2.0 * transfer_s
                )
            except LinkError as exc:
                self._reconnect(exc)
                reply, heard = None, False
            if reply is not None:
                took = time.monotonic() - sent
                self._rtt[opcode] = took if rtt is None else rtt + RTT_SMOOTHING * (took - rtt)
                return reply
            heard_any = heard_any or heard
            self.last_heard = heard_any
            silent = not heard
            if not heard:  # silence: back off towards the configured timeout
                first_s = min(max_first_s, 2.0 * first_s)
            attempt += 1
            allowed = 1 + (max(self.retries, NOISY_RETRIES) if heard_any else self.retries)
            if attempt >= allowed:
                break
        applied = "" if idempotent else " It may or may not have been applied: read the state back."
        what = "damaged replies" if heard_any else "no reply"
        raise DeviceTimeout(
            f"{what} to {name or hex(opcode)} (seq {seq}) from {self.port_name!r} after "
            f"{attempt} attempts (timeout up to {max_first_s:g} s).{applied} Check the "
            "cable/port and the board's power, or raise link.retries / link.timeout_s in the "
            "set-up file."
        )

    def _close_port(self) -> None:
        """Close the port; for ``socket://`` also the socket when the peer already went."""
        sock = getattr(self._port, "_socket", None)
        try:
            self._port.close()
        except (serial.SerialException, OSError):  # pragma: no cover - best effort
            pass
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover - best effort
                pass

    def close(self) -> None:
        self._close_port()
