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
- After ``1 + retries`` attempts: :class:`DeviceTimeout`. ``last_attempts`` tells the
  caller whether the reply it got answered a retransmission (see the session rule in
  ``docs/board-protocol.md``).
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

log = structlog.get_logger(__name__)

READ_CHUNK = 1 << 16
"""Most bytes taken from the port per read (the port is non-blocking: timeout=0)."""
POLL_S = 0.001
"""Poll period for ports without a selectable file descriptor (rfc2217://)."""


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
    """

    def __init__(
        self,
        port: str | Any,
        *,
        baudrate: int = 921600,
        timeout_s: float = 0.5,
        retries: int = 3,
        first_seq: int | None = None,
    ) -> None:
        if timeout_s <= 0 or retries < 0:
            raise LinkError(f"need timeout_s > 0 and retries >= 0, got {timeout_s}, {retries}")
        self.port_name = port if isinstance(port, str) else type(port).__name__
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self.stats = LinkStats()
        self.last_attempts = 0
        """Transmissions of the last command (1 = answered without a retransmission)."""
        self._deframer = Deframer()
        start = secrets.randbelow(1 << 16) if first_seq is None else first_seq
        self._seq = (start - 1) & 0xFFFF
        self._fd: int | None = None
        if not isinstance(port, str):
            self._port = port
            return
        try:
            self._port = serial.serial_for_url(
                port, baudrate=baudrate, timeout=0, write_timeout=timeout_s
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(
                f"cannot open board port {port!r}: {exc}. Give a device path (/dev/ttyUSB0) or a "
                "pyserial URL (socket://host:port, rfc2217://host:port); is the emulator running?"
            ) from exc
        try:  # device paths and socket:// can be waited on with select; rfc2217:// cannot
            self._fd = self._port.fileno()
        except (AttributeError, NotImplementedError, OSError, ValueError):
            self._fd = None
        log.debug("board_link_open", port=port, baudrate=baudrate)

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

    def _await_reply(self, opcode: int, seq: int, first_s: float, budget_s: float) -> Frame | None:
        """Wait ``first_s`` for the first byte (the board executes before replying), then
        ``timeout_s`` between bytes, and at most ``budget_s`` in all."""
        start = last_byte = time.monotonic()
        idle_s = first_s
        while True:
            data = self._read_some(min(idle_s, 0.05))
            now = time.monotonic()
            if data:
                last_byte = now
                idle_s = self.timeout_s
                bad_before = self._deframer.bad_frames
                for frame in self._deframer.feed(data):
                    if frame.opcode == opcode | REPLY_BIT and frame.seq == seq:
                        self.stats.replies += 1
                        return frame
                    self.stats.stale_frames += 1
                self.stats.bad_frames += self._deframer.bad_frames - bad_before
            if now - last_byte > idle_s or now - start > budget_s:
                return None

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
        first_s = self.timeout_s * timeout_scale
        transfer_s = 10.0 * (len(wire) + reply_bytes_hint + 16) / self.baudrate
        budget_s = first_s + self.timeout_s + 2.0 * transfer_s
        for attempt in range(1 + self.retries):
            self.last_attempts = attempt + 1
            if attempt:
                self.stats.retransmissions += 1
                log.debug("board_retransmit", command=name, seq=seq, attempt=attempt)
            self._write(wire)
            self.stats.frames_sent += 1
            reply = self._await_reply(opcode, seq, first_s, budget_s)
            if reply is not None:
                return reply
        applied = "" if idempotent else " It may or may not have been applied: read the state back."
        raise DeviceTimeout(
            f"no valid reply to {name or hex(opcode)} (seq {seq}) from {self.port_name!r} after "
            f"{1 + self.retries} attempts with a {first_s:g} s timeout.{applied} Check the "
            "cable/port and the board's power, or raise link.retries / link.timeout_s in the "
            "set-up file."
        )

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):  # pragma: no cover - best effort
            pass
