"""Test helper shipped with the driver: check the exact bytes exchanged, no board attached.

:class:`ScriptedPort` stands where pyserial's port would (pass it to
:class:`~drivers.board.serial_link.SerialLink`). It holds a script of
``(expected request bytes, reply bytes)``; each write must equal the next expected request,
byte for byte, and queues its reply for reading. :func:`frame` builds the wire bytes of a
request or reply from the command table, so scripts read like the protocol spec::

    port = ScriptedPort([
        (frame(P.SELECT_CHIP, 7, {"chip": 1}), frame(P.SELECT_CHIP, 7, {"chip": 1}, reply=True)),
    ])
    client = BoardClient(SerialLink(port, first_seq=7))
    client.select(1)
    port.assert_done()
"""

from __future__ import annotations

from typing import Any

from drivers.board import protocol as P
from drivers.board.framing import REPLY_BIT, encode_frame


def frame(
    cmd: P.Command,
    seq: int,
    fields: dict[str, Any] | None = None,
    arrays: dict[str, Any] | None = None,
    *,
    reply: bool = False,
    status: int = 0,
) -> bytes:
    """Wire bytes of a request (or, with ``reply=True``, a reply) of ``cmd``."""
    layout = cmd.reply if reply else cmd.request
    payload = P.pack(layout, fields or {}, arrays) if status == 0 else b""
    return encode_frame(cmd.opcode | (REPLY_BIT if reply else 0), seq, status, payload)


class ScriptedPort:
    """A pyserial-like port that checks every write against a script of exchanges."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self._script = list(script)
        self._next = 0
        self._pending = bytearray()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> int:
        data = bytes(data)
        self.written.append(data)
        if self._next >= len(self._script):
            raise AssertionError(f"unexpected write #{self._next}: {data.hex(' ')}")
        expected, reply = self._script[self._next]
        if data != expected:
            raise AssertionError(
                f"write #{self._next} differs:\n  sent     {data.hex(' ')}\n"
                f"  expected {expected.hex(' ')}"
            )
        self._next += 1
        self._pending += reply
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""

    @property
    def in_waiting(self) -> int:
        return len(self._pending)

    def read(self, size: int = 1) -> bytes:
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out

    def close(self) -> None:
        """Nothing to release."""

    def assert_done(self) -> None:
        if self._next != len(self._script):
            raise AssertionError(f"{len(self._script) - self._next} scripted exchanges never sent")
