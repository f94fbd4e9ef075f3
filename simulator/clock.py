"""Per-chip clock with two modes.

- ``virtual`` (deterministic default): time moves only by modelled latencies
  (:meth:`Clock.tick`, e.g. 130 ns per MVM input vector, a configured time per pulse) and
  by explicit :meth:`Clock.advance`.
- ``wall``: time is the real elapsed time since the clock was created (or loaded) plus an
  offset, for a long-lived service; :meth:`tick` adds nothing (real time passes by
  itself) and :meth:`advance` adds to the offset (useful to fast-forward a service).

The physics never reads the wall clock; it receives ``time_s`` from here. The source of
real time is injectable (``monotonic``) so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from simulator.errors import InputRangeError

CLOCK_MODES = ("virtual", "wall")


class Clock:
    """Chip time ``time_s`` (s) in ``virtual`` or ``wall`` mode."""

    def __init__(
        self,
        mode: str = "virtual",
        t_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in CLOCK_MODES:
            raise InputRangeError(f"clock mode {mode!r} is not one of {CLOCK_MODES}")
        if not t_s >= 0:
            raise InputRangeError(f"clock start time must be >= 0 s, got {t_s!r}")
        self._mode = mode
        self._offset_s = float(t_s)
        self._monotonic = monotonic
        self._anchor = monotonic() if mode == "wall" else 0.0

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def time_s(self) -> float:
        """Current chip time (s)."""
        if self._mode == "wall":
            return self._offset_s + (self._monotonic() - self._anchor)
        return self._offset_s

    def advance(self, dt_s: float) -> float:
        """Move time forward by ``dt_s >= 0`` seconds; returns the new time."""
        dt = float(dt_s)
        if not dt >= 0 or dt == float("inf"):
            raise InputRangeError(f"advance(dt_s) needs a finite dt_s >= 0, got {dt_s!r}")
        self._offset_s += dt
        return self.time_s

    def advance_to(self, t_s: float) -> float:
        """Move time forward to ``t_s`` (no-op if already there); time never runs backwards."""
        now = self.time_s
        if t_s < now:
            raise InputRangeError(
                f"advance_to({t_s!r}) is before the current time {now!r} s; time is monotonic"
            )
        return self.advance(t_s - now)

    def tick(self, dt_s: float) -> None:
        """Account a modelled latency: moves virtual time, ignored in wall mode."""
        if self._mode == "virtual":
            self._offset_s += dt_s

    def state(self) -> dict[str, object]:
        """JSON-able state; a wall clock is frozen at its current reading."""
        return {"mode": self._mode, "t_s": self.time_s}

    @classmethod
    def from_state(
        cls, state: dict[str, object], monotonic: Callable[[], float] = time.monotonic
    ) -> Clock:
        return cls(str(state["mode"]), float(state["t_s"]), monotonic)  # type: ignore[arg-type]
