"""An ideal PCM crossbar in numpy behind the pcm-hil driver contract: the example of
docs/writing-a-driver.md, kept under test (it passes ``hil driver check``).

URL: ``ideal://?rows=256&cols=256&step_us=0.75`` — two chips of ``rows × cols`` cells of 4
devices. Every SET pulse adds ``step_us`` to a device (clipped at ``G_MAX_US``), a RESET
sets it to ``G_MIN_US``, an MVM is exactly ``x @ G_net`` (no noise, no ADC), program sets
``G_net`` exactly, and a virtual clock moves only with ``advance``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import numpy as np

from drivers import InvalidRequest
from drivers.base import Driver
from protocols import (
    CAP_PROGRAM,
    CAP_TIME,
    CAP_TRANSPOSE,
    AdvanceReport,
    DeviceInfo,
    Limits,
    ProgramReport,
    PulseReport,
    Region,
    ResetReport,
)

G_MIN_US, G_MAX_US = 0.1, 25.0


class IdealCrossbar(Driver):
    """Two ideal chips; only the hooks of :class:`drivers.base.Driver` are implemented."""

    def __init__(self, rows: int = 256, cols: int = 256, step_us: float = 0.75) -> None:
        super().__init__()
        self.g = np.full((2, rows, cols, 4), G_MIN_US, dtype=np.float64)
        self.step_us, self.t_s = step_us, 0.0

    @classmethod
    def from_url(cls, url: str) -> IdealCrossbar:
        """``ideal://?rows=R&cols=C&step_us=S`` (the entry point's way in)."""
        q = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        if unknown := set(q) - {"rows", "cols", "step_us"}:
            raise InvalidRequest(f"unknown option(s) {sorted(unknown)} in {url!r}")
        try:
            rows, cols = int(q.get("rows", 256)), int(q.get("cols", 256))
            step = float(q.get("step_us", 0.75))
        except ValueError as exc:
            raise InvalidRequest(f"bad option value in {url!r}: {exc}") from None
        if rows < 1 or cols < 1 or not step > 0:
            raise InvalidRequest(f"{url!r}: rows and cols must be >= 1 and step_us > 0")
        return cls(rows, cols, step)

    def _info(self) -> DeviceInfo:
        return DeviceInfo(
            chips=2,
            rows=self.g.shape[1],
            cols=self.g.shape[2],
            g_min_us=G_MIN_US,
            g_max_us=G_MAX_US,
            set_step_mean_us=self.step_us,
            capabilities=frozenset({CAP_TRANSPOSE, CAP_TIME, CAP_PROGRAM}),
            limits=Limits(max_pulses_per_device=20, max_batch=4096, max_program_iterations=50),
            driver="ideal-example",
        )

    def _cells(self, r: Region) -> np.ndarray:
        return self.g[r.chip, r.row0 : r.row1, r.col0 : r.col1]

    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray:
        g = self._cells(region)
        net = ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2
        return (x @ (net.T if transpose else net)).astype(np.float32)

    def _read_conductances(self, region: Region) -> np.ndarray:
        return self._cells(region).astype(np.float32)

    def _apply_pulses(
        self, region: Region, counts: np.ndarray, reset_mask: np.ndarray | None, request_id: str
    ) -> PulseReport:
        g = self._cells(region)
        resets = 0
        if reset_mask is not None:
            g[reset_mask] = G_MIN_US
            resets = int(reset_mask.sum())
        g += counts * self.step_us
        np.clip(g, G_MIN_US, G_MAX_US, out=g)
        return PulseReport(set_pulses=int(counts.sum()), resets=resets, time_s=self.t_s)

    def _reset(self, region: Region, request_id: str) -> ResetReport:
        g = self._cells(region)
        g[...] = G_MIN_US
        return ResetReport(resets=g.size, time_s=self.t_s)

    def _program(
        self,
        region: Region,
        target_us: np.ndarray,
        tolerance_us: float,
        max_iterations: int,
        request_id: str,
    ) -> ProgramReport:
        g = self._cells(region)
        g[...] = G_MIN_US  # the net target on the A devices: G_net = target exactly
        g[..., 0] += 2 * np.maximum(target_us, 0)
        g[..., 2] += 2 * np.maximum(-target_us, 0)
        return ProgramReport(
            rms_error_us=0.0,
            max_error_us=0.0,
            pulses=0,
            iterations=1,
            converged=True,
            time_s=self.t_s,
        )

    def _advance(self, dt_s: float, request_id: str) -> AdvanceReport:
        self.t_s += dt_s
        return AdvanceReport(time_s=self.t_s)

    def _time_s(self) -> float:
        return self.t_s
