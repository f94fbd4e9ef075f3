"""Driver contract, drivers (simulator, remote, board) and the device server."""


class DriverError(Exception):
    """Root of the drivers' error tree."""
