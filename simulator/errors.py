"""The simulator's error tree: a shallow set of :class:`SimulatorError` subclasses.

Every message names the bad value, what was expected, and how to fix it.
"""

from __future__ import annotations

from simulator import SimulatorError


class RegionError(SimulatorError, ValueError):
    """A region is malformed, out of the 256x256 array, or on the wrong chip."""


class ShapeError(SimulatorError, ValueError):
    """An array argument has the wrong shape or dtype."""


class InputRangeError(SimulatorError, ValueError):
    """An argument value is out of its allowed range (NaN, beyond [-1, 1], negative count...)."""


class PresetError(SimulatorError, KeyError):
    """An unknown preset name or an invalid device-parameter value."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ChipStateError(SimulatorError):
    """A saved chip state cannot be read (missing file, wrong format version, bad arrays)."""
