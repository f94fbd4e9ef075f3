"""Errors of the board driver, placed in the drivers' error tree (``drivers/__init__.py``).

Each message names the bad value, what was expected and the likely fix. The wire code of
each class (``code``) is inherited from its contract parent, so a board error that crosses
``hil serve`` arrives at a remote client as the matching contract error.
"""

from __future__ import annotations

from drivers import DeviceError, DeviceTimeout, InvalidRequest, LimitExceeded, VersionMismatch


class FramingError(DeviceError):
    """A received frame is malformed (COBS, length, CRC or header)."""


class LinkError(DeviceError):
    """The serial link could not be opened or failed while in use."""


class BoardStatusError(DeviceError):
    """The board answered a command with a non-OK status code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BoardRestarted(BoardStatusError):
    """The board lost its session (it restarted) and refused a non-idempotent command.

    ``retransmitted`` is True when the command had been sent more than once: the first copy
    may then have been applied before the restart, so the command must not be resent.
    """

    def __init__(self, message: str, status: int, retransmitted: bool) -> None:
        super().__init__(message, status)
        self.retransmitted = retransmitted


class FirmwareMismatch(VersionMismatch):
    """The board's firmware version is not one the set-up file allows."""


class SafetyLimitError(LimitExceeded):
    """A request exceeds a pulse limit of the lab set-up; nothing was sent."""


class SetupError(InvalidRequest):
    """The lab set-up file (or board:// URL) is missing or invalid."""


class InstrumentError(DeviceError):
    """A VISA instrument could not be reached or answered unexpectedly."""


__all__ = [
    "BoardRestarted",
    "BoardStatusError",
    "DeviceTimeout",
    "FirmwareMismatch",
    "FramingError",
    "InstrumentError",
    "LinkError",
    "SafetyLimitError",
    "SetupError",
]
