"""A tiny deterministic in-test driver: an ideal crossbar in numpy (no noise, fixed step).

It exists so the contract, server and remote driver can be tested without the simulator:
every SET pulse adds ``STEP_US`` (clipped at ``G_MAX_US``), RESET sets ``G_MIN_US``,
``mvm`` is exactly ``x @ G_net``, ``program`` sets the targets exactly.
"""

from __future__ import annotations

import numpy as np

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

STEP_US = 1.0
G_MIN_US = 0.1
G_MAX_US = 10.0


class FakeDriver(Driver):
    def __init__(self, rows: int = 16, cols: int = 8) -> None:
        super().__init__()
        self.g = np.full((2, rows, cols, 4), G_MIN_US, dtype=np.float64)
        self.t_s = 0.0
        self.hook_calls: list[str] = []

    def _info(self) -> DeviceInfo:
        return DeviceInfo(
            chips=2,
            rows=self.g.shape[1],
            cols=self.g.shape[2],
            g_min_us=G_MIN_US,
            g_max_us=G_MAX_US,
            set_step_mean_us=STEP_US,
            capabilities=frozenset({CAP_TRANSPOSE, CAP_TIME, CAP_PROGRAM}),
            limits=Limits(max_pulses_per_device=20, max_batch=64, max_program_iterations=50),
            driver="fake",
        )

    def _view(self, r: Region) -> np.ndarray:
        return self.g[r.chip, r.row0 : r.row1, r.col0 : r.col1]

    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray:
        self.hook_calls.append("mvm")
        g = self._view(region)
        net = ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2
        return (x @ (net.T if transpose else net)).astype(np.float32)

    def _read_conductances(self, region: Region) -> np.ndarray:
        self.hook_calls.append("read")
        return self._view(region).astype(np.float32)

    def _apply_pulses(self, region, counts, reset_mask, request_id) -> PulseReport:
        self.hook_calls.append("apply_pulses")
        g = self._view(region)
        resets = 0
        if reset_mask is not None:
            g[reset_mask] = G_MIN_US
            resets = int(reset_mask.sum())
        g += counts * STEP_US
        np.clip(g, G_MIN_US, G_MAX_US, out=g)
        return PulseReport(set_pulses=int(counts.sum()), resets=resets, time_s=self.t_s)

    def _reset(self, region, request_id) -> ResetReport:
        self.hook_calls.append("reset")
        g = self._view(region)
        g[...] = G_MIN_US
        return ResetReport(resets=g.size, time_s=self.t_s)

    def _program(self, region, target_us, tolerance_us, max_iterations, request_id):
        self.hook_calls.append("program")
        g = self._view(region)
        # net T on the A devices, the rest at G_MIN_US: G_net = T exactly
        g[...] = G_MIN_US
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

    def _advance(self, dt_s, request_id) -> AdvanceReport:
        self.hook_calls.append("advance")
        self.t_s += dt_s
        return AdvanceReport(time_s=self.t_s)

    def _time_s(self) -> float:
        return self.t_s


class Sessions:
    """Clients of an in-process ``DeviceServer.handle``: each name says hello once and its
    requests then carry the session token, as a RemoteDriver's do."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.tokens: dict[bytes, str] = {}
        self.identity: dict[bytes, str] = {}

    def frames(self, who: bytes, frames: list, now: float = 0.0) -> list:  # type: ignore[type-arg]
        """``frames`` with ``who``'s session token put into the header."""
        import json

        from protocols import decode_reply, encode
        from protocols.messages import Hello

        if who not in self.tokens:
            hello = encode(Hello(request_id="hello", client=who.decode()))
            rep = decode_reply(self.server.handle(who, hello, now))[0]
            self.tokens[who], self.identity[who] = rep.session, rep.client_id
        header = json.loads(bytes(frames[0]))
        header["session"] = self.tokens[who]
        return [json.dumps(header).encode(), *frames[1:]]

    def call(self, who: bytes, frames: list, now: float = 0.0):  # type: ignore[no-untyped-def,type-arg]
        """The decoded reply to ``frames`` sent by ``who`` at ``now``."""
        from protocols import decode_reply

        return decode_reply(self.server.handle(who, self.frames(who, frames, now), now))
