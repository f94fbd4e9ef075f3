"""Per-device state of one chip and the in-place operations that write it.

State arrays have shape ``(256, 256, 4)`` (rows, cols, device ``A+, B+, A-, B-``):

==============  =======  ==========================================================
``g_prog_us``   float32  conductance at the last programming event, G_prog (µS)
``p_hist``      float32  Nandakumar pulse-history term P (1; P = 1 after RESET)
``t_prog_s``    float64  chip time of the last programming event (s)
``nu``          float32  drift exponent drawn at that event (1)
``g_max_us``    float32  this device's G_max (device-to-device spread) (µS)
``step_factor`` float32  this device's SET step-size factor (spread) (1)
``fault``       uint8    0 healthy, 1 stuck at RESET, 2 stuck at g_max, 3 dead (G = 0)
==============  =======  ==========================================================

The conductance at time t is ``G_prog ((t - t_prog + t0)/t0)^(-nu)`` (drift, §4); every
programming event (RESET, SET pulse, program-and-verify landing) restarts drift from the
device's current conductance and draws a new ``nu``. Faulty devices ignore all writes and
do not drift (nu = 0). Operations take flat device indices into the ``(256*256*4,)`` views.
"""

from __future__ import annotations

import numpy as np

from simulator import physics
from simulator.presets import DeviceParams
from simulator.region import ARRAY_SIZE, DEVICES_PER_CELL

SHAPE = (ARRAY_SIZE, ARRAY_SIZE, DEVICES_PER_CELL)
FIELDS = {
    "g_prog_us": np.float32,
    "p_hist": np.float32,
    "t_prog_s": np.float64,
    "nu": np.float32,
    "g_max_us": np.float32,
    "step_factor": np.float32,
    "fault": np.uint8,
}
HEALTHY, STUCK_RESET, STUCK_GMAX, DEAD = 0, 1, 2, 3
CHUNK = 16384
"""Devices per vectorised chunk of a SET request (keeps temporaries in cache, avoids page
faults from large short-lived allocations)."""


class Population:
    """The device arrays of one chip (see module doc); mutated in place by its methods."""

    def __init__(self, arrays: dict[str, np.ndarray], params: DeviceParams) -> None:
        for name, dtype in FIELDS.items():
            arr = arrays[name]
            if arr.shape != SHAPE or arr.dtype != dtype:
                raise ValueError(
                    f"state array {name}: expected {SHAPE} {np.dtype(dtype)}, "
                    f"got {arr.shape} {arr.dtype}"
                )
        self.arrays = {k: np.ascontiguousarray(arrays[k]) for k in FIELDS}
        self.params = params
        self.flat = {k: v.reshape(-1) for k, v in self.arrays.items()}

    @classmethod
    def create(cls, params: DeviceParams, rng: np.random.Generator, t_s: float) -> Population:
        """A fresh chip: every device RESET at ``t_s``; spread and faults drawn from ``rng``."""
        n = int(np.prod(SHAPE))
        g_max = params.g_max_us * (1.0 + params.g_max_spread * rng.standard_normal(n))
        g_max = np.clip(g_max, 0.5 * params.g_max_us, 1.5 * params.g_max_us).astype(np.float32)
        step = np.maximum(1.0 + params.step_spread * rng.standard_normal(n), 0.05)
        u = rng.random(n)
        edges = np.cumsum([params.p_stuck_reset, params.p_stuck_gmax, params.p_dead])
        # u < p1: stuck at RESET; < p1+p2: stuck at g_max; < p1+p2+p3: dead; else healthy
        fault = ((np.searchsorted(edges, u, side="right") + 1) % 4).astype(np.uint8)
        g = physics.reset_conductance(n, rng, params)
        g[fault == STUCK_RESET] = params.g_reset_us
        g[fault == STUCK_GMAX] = g_max[fault == STUCK_GMAX]
        g[fault == DEAD] = 0.0
        nu = physics.sample_nu(g, rng, params)
        nu[fault != HEALTHY] = 0.0
        arrays = {
            "g_prog_us": g,
            "p_hist": np.ones(n, np.float32),
            "t_prog_s": np.full(n, t_s),
            "nu": nu,
            "g_max_us": g_max,
            "step_factor": step.astype(np.float32),
            "fault": fault,
        }
        return cls({k: v.reshape(SHAPE) for k, v in arrays.items()}, params)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    @property
    def healthy_mask(self) -> np.ndarray:
        """``(256, 256, 4)`` bool: devices that respond to writes (faults are fixed)."""
        mask = getattr(self, "_healthy_mask", None)
        if mask is None:
            mask = self._healthy_mask = self.arrays["fault"] == HEALTHY
        return mask

    def healthy(self, idx: np.ndarray) -> np.ndarray:
        """The subset of flat indices ``idx`` whose devices are not faulty."""
        return idx[self.flat["fault"][idx] == HEALTHY]

    def conductance(self, idx: np.ndarray, t_s: float) -> np.ndarray:
        """Noise-free drifted conductance G(t) of flat devices ``idx`` (µS)."""
        f = self.flat
        return f["g_prog_us"][idx] * physics.drift_factor(
            t_s - f["t_prog_s"][idx], f["nu"][idx], self.params.t0_s
        )

    def read(self, idx: np.ndarray, t_s: float, rng: np.random.Generator) -> np.ndarray:
        """Noisy read ``G(t) (1 + sigma_rel xi)`` of flat devices ``idx`` (µS), fresh noise;
        clamped at 0 when ``params.read_clamp_zero`` (aihwkit's final clamp, §5)."""
        f = self.flat
        g = self.conductance(idx, t_s)
        if not self.params.read_noise:
            return g
        rel = physics.read_sigma_rel(f["g_prog_us"][idx], t_s - f["t_prog_s"][idx], self.params)
        g = g * (1.0 + rel * rng.standard_normal(idx.shape[0], dtype=np.float32))
        return np.maximum(g, np.float32(0.0), out=g) if self.params.read_clamp_zero else g

    def reset(self, idx: np.ndarray, t_s: float, rng: np.random.Generator) -> int:
        """RESET healthy devices among ``idx``: G ~ N(0.1, 0.01), P = 1, new t_prog and nu."""
        idx = self.healthy(idx)
        g = physics.reset_conductance(idx.shape[0], rng, self.params)
        self._program_event(idx, g, g, t_s, rng)
        self.flat["p_hist"][idx] = 1.0
        return int(idx.shape[0])

    def set_pulses(
        self, idx: np.ndarray, counts: np.ndarray, t_s: float, rng: np.random.Generator
    ) -> int:
        """``counts[k] >= 1`` sequential stochastic SET pulses on healthy device ``idx[k]``.

        The caller passes healthy devices only (see :attr:`healthy_mask`). Vectorised over
        devices, in chunks of :data:`CHUNK` devices so temporaries stay small and cached:
        within a chunk, devices are ordered by decreasing count (stable), so the devices
        still receiving pulse k form a prefix and each step works on array views.
        """
        total = 0
        for start in range(0, idx.shape[0], CHUNK):
            total += self._set_chunk(
                idx[start : start + CHUNK], counts[start : start + CHUNK], t_s, rng
            )
        return total

    def _set_chunk(
        self, idx: np.ndarray, counts: np.ndarray, t_s: float, rng: np.random.Generator
    ) -> int:
        kmax = int(counts.max())
        neg = np.negative(counts, dtype=np.int16 if kmax < 2**15 else np.int64)
        order = np.argsort(neg, kind="stable")
        idx, neg = idx[order], neg[order]
        f = self.flat
        g = self.conductance(idx, t_s)
        p = f["p_hist"][idx]
        g_max, step = f["g_max_us"][idx], f["step_factor"][idx]
        active = np.searchsorted(neg, -np.arange(kmax, dtype=neg.dtype), side="left")
        for m in active.tolist():
            g[:m], p[:m] = physics.set_step(
                g[:m], p[:m], g_max[:m], step[:m], physics.fast_normal(rng, (m,)), self.params
            )
        self._program_event(idx, g, g, t_s, rng)
        f["p_hist"][idx] = p
        return int(-neg.sum(dtype=np.int64))

    def land(
        self, idx: np.ndarray, target_us: np.ndarray, t_s: float, rng: np.random.Generator
    ) -> None:
        """One program-and-verify pulse on healthy ``idx``: G = target + sigma_prog xi (§3).

        The landing is clipped to ``[g_min, G_max of the device]`` (only at ``g_min`` when
        ``params.prog_clip_gmax`` is False, as in aihwkit); nu is drawn from the target
        conductance (as aihwkit's PCMLikeNoiseModel does); P decays like a SET.
        """
        f = self.flat
        sig = physics.prog_sigma(target_us, self.params)
        g = target_us + sig * rng.standard_normal(idx.shape[0], dtype=np.float32)
        hi = f["g_max_us"][idx] if self.params.prog_clip_gmax else None
        g = np.clip(g, np.float32(self.params.g_min_us), hi).astype(np.float32)
        self._program_event(idx, g, target_us.astype(np.float32), t_s, rng)
        f["p_hist"][idx] *= np.float32(np.exp(-1.0 / self.params.set_history_decay_pulses))

    def _program_event(
        self,
        idx: np.ndarray,
        g: np.ndarray,
        g_nu: np.ndarray,
        t_s: float,
        rng: np.random.Generator,
    ) -> None:
        f = self.flat
        f["g_prog_us"][idx] = g
        f["t_prog_s"][idx] = t_s
        f["nu"][idx] = physics.sample_nu(g_nu, rng, self.params)
