"""Iterative program-and-verify of net cell conductances (pcm-physics §3; Le Gallo 2023).

For each selected cell with net target T (µS):

1. RESET all four devices.
2. The side of T's sign (``A+, B+`` for T >= 0, else ``A-, B-``) must hold the sum
   ``S = 2|T| + 2 g_reset`` (the other side stays at RESET, nominally ``g_reset`` each),
   so that ``G_net = ((A+ + B+) - (A- + B-))/2 = T``.
3. Fill device A to ``a = clip(S - g_reset, g_reset, fill_fraction g_max)`` with the
   verify loop below.
4. Trim with device B: ``b = S - A_read`` (A's last verify read) when
   ``b > g_reset + tolerance``; B thereby compensates A's programming error (and A's
   saturation for large targets).

Verify loop for a set of devices with targets ``g_t``: each iteration applies one gradual
programming pulse to every device not yet accepted (a RESET first when its last read
overshot ``g_t + tolerance``), whose landing is ``G = g_t + sigma_prog(g_t) xi`` (Joshi 2020
converged-programming statistics), then a verify read with fresh 1/f read noise; a device
is accepted when ``|read - g_t| <= tolerance_us``. With a loose tolerance the landed error
is exactly N(0, sigma_prog); a tighter tolerance rejects outliers at the cost of
iterations, limited by read noise. The pulse count counts these gradual pulses (one per
device and iteration), not the sub-pulses a real chip's approach phase would use.

Verify reads draw from the chip's *write* stream: a program request is then a
deterministic function of the write history, so a replayed journal of writes reproduces
the state exactly regardless of any MVMs in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.clock import Clock
from simulator.population import Population
from simulator.presets import DeviceParams


@dataclass(frozen=True)
class ProgramResult:
    """Outcome of :meth:`simulator.Chip.program`."""

    n_cells: int
    """cells programmed"""
    rms_error_us: float
    """rms of (achieved noise-free G_net - target) over the cells (µS)"""
    max_error_us: float
    """largest |achieved G_net - target| (µS)"""
    n_pulses: int
    """programming pulses applied (gradual pulses plus RESETs)"""
    n_resets: int
    """RESET pulses among them"""
    iterations: int
    """verify iterations used, fill plus trim phase: at most ``max_iterations`` in all"""
    n_unconverged: int
    """cells of responsive devices whose verified net conductance ``(A_read + B_read - S)/2``
    (last verify reads; an untouched B counts as nominal RESET) is still outside the
    tolerance: what more iterations could still fix"""
    t_s: float
    """chip time at the end of programming (s)"""
    n_faulty: int = 0
    """cells outside the tolerance because one of their devices is stuck or dead (the
    verify loop does not pulse a device that does not respond, pcm-physics §6); a faulty
    A device that B compensates is within tolerance and not counted"""


@dataclass
class _LoopResult:
    last_read: np.ndarray
    pulses: int
    resets: int
    iterations: int


def _verify_loop(
    pop: Population,
    idx: np.ndarray,
    target: np.ndarray,
    tol: float,
    max_iter: int,
    clock: Clock,
    rng: np.random.Generator,
    params: DeviceParams,
) -> _LoopResult:
    healthy = pop.flat["fault"][idx] == 0
    last = np.empty(idx.shape[0], np.float32)
    sick = np.flatnonzero(~healthy)
    if sick.size:
        last[sick] = pop.read(idx[sick], clock.time_s, rng)
    pending = np.flatnonzero(healthy)
    pulses = resets = iterations = 0
    while pending.size and iterations < max_iter:
        iterations += 1
        if iterations > 1:
            over = pending[last[pending] > target[pending] + tol]
            if over.size:
                resets += pop.reset(idx[over], clock.time_s, rng)
        pop.land(idx[pending], target[pending], clock.time_s, rng)
        pulses += int(pending.size)
        clock.tick(params.pulse_time_s)
        last[pending] = pop.read(idx[pending], clock.time_s, rng)
        clock.tick(params.mvm_latency_s)
        pending = pending[np.abs(last[pending] - target[pending]) > tol]
    return _LoopResult(last, pulses + resets, resets, iterations)


def program_cells(
    pop: Population,
    cell_flat: np.ndarray,
    target_us: np.ndarray,
    tolerance_us: float,
    max_iterations: int,
    clock: Clock,
    rng: np.random.Generator,
) -> ProgramResult:
    """Program cells (flat cell indices ``row*256 + col``) to net targets ``target_us``."""
    params = pop.params
    base = cell_flat.astype(np.int64) * 4
    devices = (base[:, None] + np.arange(4)).reshape(-1)  # the cells' 4 devices, cell-major
    target = target_us.astype(np.float32)
    n_resets = pop.reset(devices, clock.time_s, rng)
    clock.tick(params.pulse_time_s)
    pos = target >= 0
    a_idx = base + np.where(pos, 0, 2)
    b_idx = base + np.where(pos, 1, 3)
    g_r = np.float32(params.g_reset_us)
    side_sum = 2 * np.abs(target) + 2 * g_r
    a_t = np.clip(side_sum - g_r, g_r, np.float32(params.fill_fraction * params.g_max_us))
    # one iteration budget for both phases: the fill may use all but one iteration, the
    # trim what the fill left (``iterations`` never exceeds ``max_iterations``)
    fill = _verify_loop(
        pop,
        a_idx,
        a_t.astype(np.float32),
        tolerance_us,
        max(max_iterations - 1, 1),
        clock,
        rng,
        params,
    )
    b_t = side_sum - fill.last_read
    need = np.flatnonzero(b_t > g_r + tolerance_us)
    if fill.iterations >= max_iterations:  # no budget left: B stays at RESET
        need = need[:0]
    b_t = np.minimum(b_t, np.float32(params.g_max_us)).astype(np.float32)
    trim = _verify_loop(
        pop,
        b_idx[need],
        b_t[need],
        tolerance_us,
        max_iterations - fill.iterations,
        clock,
        rng,
        params,
    )
    b_last = np.full(target.shape, g_r, dtype=np.float32)  # unprogrammed B: nominal RESET
    b_last[need] = trim.last_read
    verified_err = (fill.last_read + b_last - side_sum) * np.float32(0.5)
    outside = np.abs(verified_err) > tolerance_us
    faulty = (pop.flat["fault"][devices] != 0).reshape(-1, 4)
    faulty_cell = faulty.any(axis=1)
    t_end = clock.time_s
    g4 = pop.conductance(devices, t_end).reshape(-1, 4)
    net = ((g4[:, 0] + g4[:, 1]) - (g4[:, 2] + g4[:, 3])) * np.float32(0.5)
    err = (net - target).astype(np.float64)
    return ProgramResult(
        n_cells=int(target.size),
        rms_error_us=float(np.sqrt(np.mean(err**2))) if err.size else 0.0,
        max_error_us=float(np.max(np.abs(err))) if err.size else 0.0,
        n_pulses=n_resets + fill.pulses + trim.pulses,
        n_resets=n_resets + fill.resets + trim.resets,
        iterations=fill.iterations + trim.iterations,
        n_unconverged=int(np.count_nonzero(outside & ~faulty_cell)),
        t_s=t_end,
        n_faulty=int(np.count_nonzero(outside & faulty_cell)),
    )
