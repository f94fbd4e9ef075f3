"""Statistical two-chip PCM crossbar simulator (pure numpy; no I/O in the physics)."""


class SimulatorError(Exception):
    """Root of the simulator's error tree."""
