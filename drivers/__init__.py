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


class ReservationLost(LeaseConflict):
    """The server no longer holds this client's run reservation (it lapsed: the client was
    silent for longer than the reservation TTL, or the server restarted without state)."""


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


def open_driver(url: str) -> Driver:
    """Open the driver a URL names (its scheme is looked up in :mod:`drivers.registry`).

    - ``sim://?preset=hermes&seed=0&state_dir=DIR``: in-process :class:`drivers.sim.SimDriver`
      (a bare ``sim://`` is preset ``hermes``, seed 0, no persistence);
    - ``tcp://host:port``, ``ipc://path``, ``inproc://name``: :class:`drivers.remote.RemoteDriver`
      to a ``hil serve`` server (query options: ``timeout_s``, ``retries``,
      ``server_key``, ``client_key``);
    - ``board://SETUP_FILE``: the real board, via ``drivers.board.open_board(url)``;
    - any scheme registered with :func:`drivers.registry.register_scheme` or provided by an
      installed package (entry-point group ``pcm_hil.drivers``).
    """
    from drivers.registry import opener

    return opener(urlsplit(url).scheme, url)(url)


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
    "ReservationLost",
    "Unauthorised",
    "VersionMismatch",
    "open_driver",
]
