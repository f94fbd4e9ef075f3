"""Driver contract, drivers (simulator, remote, board) and the device server.

Public API:

- :class:`drivers.base.Driver`: the contract every chip backend implements;
- :func:`open_driver`: a driver from a URL (``sim://``, ``tcp://``, ``ipc://``, ``board://``);
- the error tree below, rooted at :class:`DriverError`. Each error has a ``code`` that is
  also its wire error code (``docs/protocol.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from drivers.base import Driver
    from protocols.messages import ErrorCode


class DriverError(Exception):
    """Root of the drivers' error tree."""

    code: ErrorCode = "device_error"


class InvalidRequest(DriverError):
    """A request is malformed: bad region, shape, dtype or value. Fix the caller."""

    code: ErrorCode = "bad_request"


class NotFound(DriverError):
    """A named thing (lease, chip, driver module) does not exist."""

    code: ErrorCode = "not_found"


class LimitExceeded(DriverError):
    """A request exceeds a device limit (pulses per device, batch, iterations)."""

    code: ErrorCode = "limit_exceeded"


class LeaseConflict(DriverError):
    """Another client holds a conflicting lease on an overlapping region."""

    code: ErrorCode = "lease_conflict"


class DeviceError(DriverError):
    """The device (or the server hosting it) failed to carry out a valid request."""

    code: ErrorCode = "device_error"


class DeviceTimeout(DeviceError):
    """The device or server did not answer in time (after the configured retries)."""

    code: ErrorCode = "device_error"


class DeviceUnreachable(DeviceTimeout):
    """Nothing answers at the device's address (connection refused, host down)."""

    code = "device_error"


class Unauthorised(DriverError):
    """The server refused this client's credentials (CURVE key)."""

    code: ErrorCode = "unauthorised"


class OutcomeUnknown(DriverError):
    """A retry of a request whose reply record was evicted: it may or may not have been
    applied, and the server will not apply it again."""

    code: ErrorCode = "outcome_unknown"


class VersionMismatch(DriverError):
    """Client and server speak different protocol versions."""

    code: ErrorCode = "version_mismatch"


ERROR_BY_CODE: dict[ErrorCode, type[DriverError]] = {
    "bad_request": InvalidRequest,
    "not_found": NotFound,
    "lease_conflict": LeaseConflict,
    "limit_exceeded": LimitExceeded,
    "device_error": DeviceError,
    "version_mismatch": VersionMismatch,
    "unauthorised": Unauthorised,
    "outcome_unknown": OutcomeUnknown,
    "internal": DeviceError,
}
"""Wire error code -> the exception a client raises for it."""

SCHEMES = ("sim", "tcp", "ipc", "inproc", "board")


def open_driver(url: str) -> Driver:
    """Open the driver a URL names.

    - ``sim://?preset=hermes&seed=0&state_dir=DIR``: in-process :class:`drivers.sim.SimDriver`
      (a bare ``sim://`` is preset ``hermes``, seed 0, no persistence);
    - ``tcp://host:port``, ``ipc://path``, ``inproc://name``: :class:`drivers.remote.RemoteDriver`
      to a ``hil serve`` server (query options: ``timeout_s``, ``retries``,
      ``server_key``, ``client_key``);
    - ``board://SETUP_FILE``: the real board, via ``drivers.board.open_board(url)``.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sim":
        from drivers.sim import SimDriver

        return SimDriver.from_url(url)
    if scheme in ("tcp", "ipc", "inproc"):
        from drivers.remote import RemoteDriver

        return RemoteDriver.from_url(url)
    if scheme == "board":
        try:
            from drivers.board import open_board  # type: ignore[attr-defined]
        except ImportError as exc:
            raise NotFound(
                f"cannot open {url!r}: the board driver (drivers.board.open_board) is not "
                f"available ({exc}). Use sim:// for the simulator or tcp:// for a server."
            ) from exc
        return open_board(url)
    raise InvalidRequest(
        f"unknown driver URL scheme {scheme!r} in {url!r}; expected one of "
        + ", ".join(f"{s}://" for s in SCHEMES)
        + " (e.g. sim://?preset=hermes&seed=0 or tcp://127.0.0.1:5555)"
    )


__all__ = [
    "ERROR_BY_CODE",
    "DeviceError",
    "DeviceTimeout",
    "DeviceUnreachable",
    "DriverError",
    "InvalidRequest",
    "LeaseConflict",
    "LimitExceeded",
    "NotFound",
    "OutcomeUnknown",
    "Unauthorised",
    "VersionMismatch",
    "open_driver",
]
