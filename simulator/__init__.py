"""Statistical two-chip PCM crossbar simulator (pure numpy; no I/O in the physics).

Public API::

    from simulator import Chip, Region, get_preset, DeviceParams
    chip = Chip(chip_id=0, params=get_preset("hermes"), seed=1)
    region = Region(0, 0, 128, 0, 64)
    chip.program(region, target_us)          # program-and-verify net conductances
    y_us = chip.mvm(region, x)               # (batch, rows) in [-1, 1] -> (batch, cols) µS
    chip.apply_pulses(region, counts, reset_mask)
    chip.advance(3600.0); chip.save(path); Chip.load(path)

Conventions (docs/ARCHITECTURE.md): conductances in µS, times in s, device order along the
last axis ``0 = A+, 1 = B+, 2 = A-, 3 = B-``, ``G_net = ((G_A+ + G_B+) - (G_A- + G_B-))/2``.
The physics follows ``../shared/docs/pcm-physics.md``; each module cites its section.
"""


class SimulatorError(Exception):
    """Root of the simulator's error tree."""


from simulator.chip import Chip, ProgramResult, PulseResult  # noqa: E402
from simulator.clock import Clock  # noqa: E402
from simulator.errors import (  # noqa: E402
    ChipStateError,
    InputRangeError,
    PresetError,
    RegionError,
    ShapeError,
)
from simulator.presets import PRESETS, DeviceParams, get_preset  # noqa: E402
from simulator.region import ARRAY_SIZE, DEVICES_PER_CELL, Region  # noqa: E402

__all__ = [
    "ARRAY_SIZE",
    "DEVICES_PER_CELL",
    "PRESETS",
    "Chip",
    "ChipStateError",
    "Clock",
    "DeviceParams",
    "InputRangeError",
    "PresetError",
    "ProgramResult",
    "PulseResult",
    "Region",
    "RegionError",
    "ShapeError",
    "SimulatorError",
    "get_preset",
]
