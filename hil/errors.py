"""Root of the ``hil`` error tree. Messages name the bad value, what was expected, and the fix."""


class HilError(Exception):
    """Base class for every error raised by the ``hil`` package."""

    exit_code = 1
    """the CLI's exit status when this error ends a command"""
    label = "error"
    """how the CLI labels the line it prints (``hil CMD: LABEL: message``)"""


class ConfigError(HilError):
    """A run or CLI configuration value is invalid."""


class DataError(HilError):
    """A data set could not be found, fetched or parsed."""
