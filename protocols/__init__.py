"""ZeroMQ wire protocol: pydantic message models and raw-buffer array framing.

Public API: :class:`Region`, :class:`DeviceInfo`, :class:`Limits`, the reports, the
message models in :mod:`protocols.messages`, and :func:`encode` / :func:`decode_request`
/ :func:`decode_reply` in :mod:`protocols.framing`. See ``docs/protocol.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.messages import ErrorCode


class ProtocolError(Exception):
    """Root of the protocol's error tree: a message or frame is malformed.

    ``request_id`` is the id of the offending request when its header parsed as JSON and
    carried a well-formed ``request_id`` (1-128 characters), else ``None``: an error reply
    then carries it, so a client can match the error to its request.
    """

    code: ErrorCode = "bad_request"

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class MalformedMessage(ProtocolError):
    """A frame, header or array buffer does not follow the spec."""

    code: ErrorCode = "bad_request"


class VersionMismatchError(ProtocolError):
    """The peer speaks another protocol version."""

    code: ErrorCode = "version_mismatch"


class MessageTooLarge(MalformedMessage):
    """A message exceeds a size bound (header bytes, frames, total bytes)."""

    code: ErrorCode = "limit_exceeded"


from protocols.framing import decode_reply, decode_request, encode  # noqa: E402
from protocols.messages import ERROR_CODES, PROTOCOL_VERSION  # noqa: E402
from protocols.models import (  # noqa: E402
    CAP_MVM_CODES,
    CAP_PROGRAM,
    CAP_SNAPSHOT,
    CAP_TIME,
    CAP_TRANSPOSE,
    AdvanceReport,
    DeviceInfo,
    Limits,
    ProgramReport,
    PulseReport,
    ResetReport,
)
from protocols.region import Region  # noqa: E402

__all__ = [
    "CAP_MVM_CODES",
    "CAP_PROGRAM",
    "CAP_SNAPSHOT",
    "CAP_TIME",
    "CAP_TRANSPOSE",
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "AdvanceReport",
    "DeviceInfo",
    "Limits",
    "MalformedMessage",
    "MessageTooLarge",
    "ProgramReport",
    "ProtocolError",
    "PulseReport",
    "Region",
    "ResetReport",
    "VersionMismatchError",
    "decode_reply",
    "decode_request",
    "encode",
]
