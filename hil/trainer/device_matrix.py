"""A :class:`~hil.learning.matrix.MatrixOp` whose weights live on a PCM chip region.

The learning code calls the same members as on a host matrix; here they become driver
requests (``hil`` reaches chips only through the driver contract). ``shape`` and ``dtype``
touch nothing, ``matmul`` is MVM requests, ``update`` is at most one pulse request, and
:meth:`DeviceMatrix.read_weights` is the one member that reads the conductances.

Forward (``matmul``), for ``x`` of shape ``(..., m)`` flattened to rows ``x_k``:

    s_k   = max_i |x_k,i|                      (per-row input scale)
    y_k   = s_k · mvm(x_k / s_k) / scale · c    (µS → weight units, c: drift compensation)

so one MVM request carries a whole time-major batch (split only at the device's
``max_batch``). Rows with ``s_k = 0`` (sequence padding, silent spike vectors, empty
frames) are not sent: their output is exactly 0 (no input current, and the read noise
``sqrt(x² @ V)`` of a zero row is 0). The DAC quantises ``x_k / s_k`` to 8 bits; binary spikes and piano rolls are
exact.

Update (``update``), the mixed-precision scheme of Nandakumar et al. 2020:

    χ ← χ + ΔW                          (high-precision host accumulator, weight units)
    n = trunc(χ / ε),  |n| ≤ n_max      (signed SET pulse counts)
    χ ← χ − n ε
    ε = ΔG_set / (2 · scale)            (one SET pulse on one device moves G_net by ΔG_set/2)

``n > 0`` goes to the ``+`` side, ``n < 0`` to the ``−`` side; which of the A/B devices gets
it is chosen by a global round-robin counter (Boybat 2018, :func:`hil.trainer.cells.arbitrate`).
Every pulse request carries a deterministic request id, so a retried request is never
applied twice.

Refresh (``refresh``): read the cells, find those whose both sides have climbed
(:func:`hil.trainer.cells.plan_refresh`), RESET them and re-program their net weight with
SET pulses and verify reads (contract verbs only, so every driver supports it). A verify
read covers only the row runs and column span of the cells just pulsed, not the region.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from drivers.base import Driver
from hil.errors import ConfigError
from hil.trainer.cells import CellMapping, RefreshConfig, arbitrate, net_conductance, plan_refresh
from protocols.region import Region

SATURATED_FRACTION = 0.95
"""a device read above this fraction of g_max counts as saturated (metrics only)"""


class RequestIds:
    """Deterministic request ids ``{run}-{attempt}-{seq}-{tag}`` for state-changing requests.

    ``attempt`` changes on every resume, so a resumed run never collides with the ids of the
    attempt that crashed; within an attempt a retry of the same request reuses its id.
    """

    def __init__(self, run_id: str, attempt: int = 0, seq: int = 0) -> None:
        self.run_id, self.attempt, self.seq = run_id, attempt, seq

    def next(self, tag: str) -> str:
        self.seq += 1
        return f"{self.run_id}-{self.attempt}-{self.seq:09d}-{tag}"


@dataclass
class PulseStats:
    """Counters a :class:`DeviceMatrix` accumulates (reset per epoch by the trainer)."""

    pulses: int = 0
    requests: int = 0
    refreshes: int = 0
    clipped: int = 0
    mvm_requests: int = 0
    mvm_rows: int = 0
    mvm_rows_skipped: int = 0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


@dataclass(frozen=True)
class UpdateConfig:
    """How weight updates become pulses."""

    max_pulses_per_update: int = 1
    """cap on |n| per device per update request (larger χ stays in the accumulator)"""
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    program_tolerance_us: float = 0.3
    """tolerance of program-and-verify (initial write and refresh), µS"""
    program_max_iterations: int = 20


class DeviceMatrix:
    """An ``(m, n)`` matrix on ``region`` of ``driver``; see the module docstring."""

    def __init__(
        self,
        name: str,
        driver: Driver,
        region: Region,
        mapping: CellMapping,
        *,
        trainable: bool,
        ids: RequestIds,
        update_cfg: UpdateConfig | None = None,
    ) -> None:
        info = driver.info()
        self.name = name
        self.driver = driver
        self.region = region
        self.mapping = mapping
        self.trainable = trainable
        self.ids = ids
        self.cfg = update_cfg or UpdateConfig()
        if self.cfg.max_pulses_per_update > info.limits.max_pulses_per_device:
            raise ConfigError(
                f"max_pulses_per_update={self.cfg.max_pulses_per_update} exceeds the device "
                f"limit {info.limits.max_pulses_per_device} pulses per device per request"
            )
        self.g_max_us = info.g_max_us
        self.max_batch = info.limits.max_batch
        self.epsilon = info.set_step_mean_us / (2.0 * mapping.scale)
        self.chi = np.zeros(region.shape, dtype=np.float64)
        self.counter = 0
        self.compensation: np.ndarray | float = 1.0
        self.stats = PulseStats()

    # --------------------------------------------------------------- MatrixOp
    @property
    def shape(self) -> tuple[int, int]:
        return self.region.shape

    @property
    def dtype(self) -> np.dtype:
        """float64: weights read back and the accumulator χ are host float64."""
        return np.dtype(np.float64)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        m, n = self.shape
        if x.shape[-1] != m:
            raise ConfigError(
                f"{self.name}: matmul input has last axis {x.shape[-1]}, expected {m}"
            )
        lead = x.shape[:-1]
        rows = x.reshape(-1, m).astype(np.float32, copy=False)
        # s = max|x| per row, as the int32 max of |x|'s bits: for floats without sign bit
        # the bit patterns order as the values (NaN above inf, so NaN still propagates),
        # and numpy's integer max is vectorised where its float max is not
        s = np.abs(rows).view(np.int32).max(axis=1, keepdims=True).view(np.float32)
        sent = np.flatnonzero(s[:, 0] != 0)  # all-zero rows give exactly 0: not sent
        dense = sent.size == rows.shape[0]
        if dense:
            scaled = rows / s
            out = np.empty((rows.shape[0], n), dtype=np.float32)
        else:
            scaled = rows[sent]  # a copy (fancy index): scaled in place
            scaled /= s[sent]
            out = np.zeros((rows.shape[0], n), dtype=np.float32)
        # µS -> weight units and the row scale undone, per sent row (0 stays 0 elsewhere)
        factor = (s if dense else s[sent]) * np.float32(1.0 / self.mapping.scale)
        for k in range(0, sent.size, self.max_batch):
            y_us = self.driver.mvm(self.region, scaled[k : k + self.max_batch])
            f = factor[k : k + self.max_batch]
            if dense:
                np.multiply(y_us, f, out=out[k : k + self.max_batch])
            else:
                out[sent[k : k + self.max_batch]] = y_us * f
            self.stats.mvm_requests += 1
            self.stats.mvm_rows += y_us.shape[0]
        self.stats.mvm_rows_skipped += rows.shape[0] - sent.size
        if not (np.isscalar(self.compensation) and self.compensation == 1.0):
            out *= self.compensation
        y = out.reshape(*lead, n)
        return y.astype(x.dtype, copy=False) if x.dtype.kind == "f" else y

    def read_weights(self) -> np.ndarray:
        """Current weights read back from the chip (one noisy read of the region), weight
        units. The only member that reads conductances for the learning code."""
        return self.mapping.to_weight(net_conductance(self.driver.read_conductances(self.region)))

    def update(self, delta: np.ndarray) -> None:
        if not self.trainable:
            raise ConfigError(f"{self.name} is fixed (feedback matrices never change)")
        if delta.shape != self.shape:
            raise ConfigError(f"{self.name}: update of shape {delta.shape}, expected {self.shape}")
        self.chi += delta
        n = np.trunc(self.chi / self.epsilon)
        cap = self.cfg.max_pulses_per_update
        self.stats.clipped += int(np.count_nonzero(np.abs(n) > cap))
        n = np.clip(n, -cap, cap).astype(np.int32)
        if not n.any():
            return
        self.chi -= n * self.epsilon
        counts, self.counter = arbitrate(n, self.counter)
        report = self.driver.apply_pulses(self.region, counts, request_id=self.ids.next(self.name))
        self.stats.pulses += report.set_pulses
        self.stats.requests += 1

    # ------------------------------------------------------------ programming
    def program(self, w: np.ndarray) -> dict[str, Any]:
        """Program-and-verify weights ``w`` (m, n); returns the achieved error in µS and
        weights against the tolerance, the iterations against their cap, and the cells
        outside the tolerance (for responsive devices, and for stuck or dead ones)."""
        report = self.driver.program(
            self.region,
            self.mapping.to_conductance(w).astype(np.float32),
            tolerance_us=self.cfg.program_tolerance_us,
            max_iterations=self.cfg.program_max_iterations,
            request_id=self.ids.next(f"{self.name}-program"),
        )
        self.chi[:] = 0.0
        return {
            "rms_error_us": report.rms_error_us,
            "max_error_us": report.max_error_us,
            "rms_error_w": report.rms_error_us / self.mapping.scale,
            "pulses": report.pulses,
            "iterations": report.iterations,
            "max_iterations": self.cfg.program_max_iterations,
            "tolerance_us": self.cfg.program_tolerance_us,
            "converged": report.converged,
            "cells": report.cells,
            "unconverged_cells": report.unconverged_cells,
            "faulty_cells": report.faulty_cells,
        }

    def refresh(self) -> int:
        """Refresh saturated cells; returns how many.

        ``read → plan (both sides climbed) → RESET the planned cells → re-program their net
        weight G_net`` with SET pulses and verify reads, using only the contract's
        ``read_conductances`` and ``apply_pulses`` (so it runs on every driver). Each verify
        iteration sends ``n = ⌊2|ΔG_net|/ΔG_set⌋`` (at least 1) pulses to the side of the
        deficit's sign: to device A until it nears g_max, then to B (Le Gallo 2023's
        fill-then-trim); it stops when every deficit is within the program tolerance.
        """
        g = np.array(self.driver.read_conductances(self.region))  # own copy: updated below
        plan = plan_refresh(g, self.g_max_us, self.cfg.refresh)
        n_cells = int(plan.sum())
        if not n_cells:
            return 0
        target = net_conductance(g)
        reset = np.repeat(plan[..., None], 4, axis=-1)
        counts = np.zeros((*self.shape, 4), dtype=np.int32)
        step_us = self.driver.info().set_step_mean_us
        cap = self.driver.info().limits.max_pulses_per_device
        for _ in range(self.cfg.program_max_iterations):
            deficit = np.where(plan, target - net_conductance(g), 0.0)
            deficit[reset[..., 0]] = target[reset[..., 0]]  # just RESET: G_net ≈ 0
            todo = np.abs(deficit) > max(self.cfg.program_tolerance_us, 0.5 * step_us)
            if not todo.any():
                break
            n = np.clip(np.floor(2.0 * np.abs(deficit) / step_us), 1, cap).astype(np.int32)
            n = np.where(todo, n, 0)
            side = np.where(deficit > 0, 0, 2)  # A+ or A-
            use_b = np.take_along_axis(g, side[..., None], axis=-1)[..., 0] > 0.8 * self.g_max_us
            use_b &= ~reset[..., 0]
            device = side + use_b.astype(np.int64)
            counts[:] = 0
            np.put_along_axis(counts, device[..., None], n[..., None], axis=-1)
            self.driver.apply_pulses(
                self.region,
                counts,
                reset if reset.any() else None,
                request_id=self.ids.next(f"{self.name}-refresh"),
            )
            self.stats.pulses += int(counts.sum())
            reset[:] = False
            self._reread(g, todo)
        self.stats.refreshes += n_cells
        return n_cells

    def _reread(self, g: np.ndarray, cells: np.ndarray) -> None:
        """Read again only the cells in ``cells`` (rows, cols) bool, into ``g`` in place:
        one read per run of consecutive rows holding such cells, over the columns they
        span (the other cells were not pulsed, their last read stands)."""
        rows = np.flatnonzero(cells.any(axis=1))
        if not rows.size:
            return
        breaks = np.flatnonzero(np.diff(rows) > 1) + 1
        for run in np.split(rows, breaks):
            r0, r1 = int(run[0]), int(run[-1]) + 1
            cols = np.flatnonzero(cells[r0:r1].any(axis=0))
            c0, c1 = int(cols[0]), int(cols[-1]) + 1
            reg = self.region
            sub = Region(reg.chip, reg.row0 + r0, reg.row0 + r1, reg.col0 + c0, reg.col0 + c1)
            g[r0:r1, c0:c1] = self.driver.read_conductances(sub)

    def saturated_cells(self) -> int:
        """Cells with a device above ``SATURATED_FRACTION·g_max`` (one read of the region)."""
        g = self.driver.read_conductances(self.region)
        return int(np.count_nonzero((g > SATURATED_FRACTION * self.g_max_us).any(axis=-1)))

    # -------------------------------------------------------- drift compensation
    def calibrate(self, probe: np.ndarray) -> np.ndarray:
        """Raw probe outputs (µS) now; the reference for :meth:`compensate`."""
        return np.abs(self.driver.mvm(self.region, probe)).astype(np.float64)

    def compensate(self, probe: np.ndarray, reference: np.ndarray, mode: str) -> None:
        """Set the output compensation from a fresh probe read against ``reference``.

        ``global``: ``c = mean|y_ref| / mean|y_now|``; ``per_column``: the same per column;
        ``none``: ``c = 1``.
        """
        if mode == "none":
            self.compensation = 1.0
            return
        now = self.calibrate(probe)
        if mode == "global":
            self.compensation = float(reference.mean() / max(now.mean(), 1e-12))
        elif mode == "per_column":
            ref_c, now_c = reference.mean(axis=0), now.mean(axis=0)
            self.compensation = np.where(now_c > 1e-9, ref_c / np.maximum(now_c, 1e-12), 1.0)
        else:
            raise ConfigError(f"drift compensation {mode!r}: expected none, global or per_column")

    # ------------------------------------------------------------- checkpoint
    STAT_FIELDS = tuple(f.name for f in fields(PulseStats))

    def state(self) -> dict[str, np.ndarray]:
        """χ, the round-robin counter and this epoch's counters (for checkpoints)."""
        stats = np.array([getattr(self.stats, f) for f in self.STAT_FIELDS], dtype=np.int64)
        return {"chi": self.chi.copy(), "counter": np.array(self.counter), "stats": stats}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.chi[:] = state["chi"]
        self.counter = int(state["counter"])
        if "stats" in state:  # checkpoints before the counters were saved lack them
            stats = state["stats"]  # older checkpoints hold a prefix of today's fields
            for f, v in zip(self.STAT_FIELDS[: len(stats)], stats, strict=True):
                setattr(self.stats, f, int(v))
