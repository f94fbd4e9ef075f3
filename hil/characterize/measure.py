"""The measurements of ``hil characterize``, through the driver contract only.

Every phase works on one region of one chip (all its cells, all four devices) and uses
only ``reset``, ``apply_pulses``, ``read_conductances``, ``program`` and, on a simulator,
``advance``/``time_s`` (capability ``time_control``). Each measurement point is the mean
of ``reads`` repeated reads, so read noise can be separated from device-to-device spread.

1. **reset**: RESET every device; ``reads`` reads -> per-device RESET level and read
   variance.
2. **set**: from that RESET, ``set_pulses + sat_pulses`` single SET pulses to every device,
   the mean of ``set_reads`` reads after each -> the SET curve (``k = 0..K``) per device.
   The first ``set_pulses`` give the SET step curve; the rest approach saturation (g_max).
3. **program**: the region's columns are split into bands; band ``j`` gets the net target
   ``T_j = (L_j - g_reset)/2`` so that one device per cell is programmed to ``L_j`` (levels
   as fractions of the nominal g_max); a last band asks for 0.95 g_net_max, which reveals
   how far one device is filled before the second takes over. Programming is one-shot
   (a tolerance far above any error), so each landing is the raw programming
   distribution.
4. **drift**: ``reads`` reads of the programmed devices at several ages: on a simulator
   the device clock is advanced (``drift_ages_s``); on a board the host waits in real time,
   at most ``drift_hours``.
5. **periphery**: MVMs of the programmed region with random inputs and with every row at
   +1 (the columns' sums then exceed a typical ADC range): the ADC step and full scale.
6. **verify**: program-and-verify of the same targets at ``tolerance_us``; ``reads``
   reads of the net conductance -> programming error against target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from drivers.base import Driver
from protocols.models import CAP_TIME
from protocols.region import Region

LEVELS = (0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.85)
"""Programmed device levels as fractions of the nominal g_max (below any fill cap)."""
SIM_DRIFT_AGES_S = (0.0, 60.0, 3600.0, 86400.0)
ONE_SHOT_TOLERANCE_US = 1e3

Tick = Callable[[str, float], None]
"""Progress callback: ``tick(phase, fraction_done)``."""


@dataclass(frozen=True)
class Plan:
    """What to measure (see module doc)."""

    region: Region
    reads: int = 4
    set_reads: int = 2
    set_pulses: int = 30
    sat_pulses: int = 30
    levels: tuple[float, ...] = LEVELS
    drift_ages_s: tuple[float, ...] = SIM_DRIFT_AGES_S
    drift_hours: float = 1.0
    tolerance_us: float = 0.5
    max_iterations: int = 20


@dataclass
class Measurements:
    """Raw results; device arrays are flattened ``(rows, cols, 4)`` of the region."""

    info: dict
    region: Region
    reset_mean: np.ndarray  # (n_dev,) µS
    reset_var: np.ndarray  # (n_dev,) µS² across repeated reads
    set_curve: np.ndarray  # (K + 1, n_dev) mean of set_reads reads after k pulses
    set_reads: int
    levels_us: np.ndarray  # (n_bands,) intended device level per band (last: high band)
    band: np.ndarray  # (n_cells,) band index of each cell
    prog_device: np.ndarray  # (n_cells,) index 0..3 of the programmed device
    ages_s: np.ndarray  # (n_ages,) mean age of each drift read series (s)
    drift_mean: np.ndarray  # (n_ages, n_cells) mean of reads of the programmed device
    drift_var: np.ndarray  # (n_ages, n_cells) variance across the repeated reads
    landed: np.ndarray  # (n_cells, 4) mean read of every device right after programming
    verify_net: np.ndarray  # (n_cells,) mean net read after program-and-verify
    targets_us: np.ndarray  # (n_cells,) net targets
    reads: int
    any_negative_read: bool
    mvm_random: np.ndarray  # (batch, cols) MVM outputs of random inputs (µS)
    mvm_ones: np.ndarray  # (cols,) MVM output with every row at +1 (µS)
    timings_s: dict = field(default_factory=dict)


class _Reader:
    def __init__(self, drv: Driver, region: Region) -> None:
        self.drv, self.region = drv, region
        self.negative = False

    def reads(self, n: int) -> np.ndarray:
        out = np.stack([self.drv.read_conductances(self.region) for _ in range(n)])
        self.negative |= bool((out < 0).any())
        return out.reshape(n, -1).astype(np.float64)


def _clock(drv: Driver) -> Callable[[], float]:
    if drv.info().has(CAP_TIME):
        return drv.time_s
    return time.monotonic


def _wait_until(drv: Driver, clock: Callable[[], float], t_s: float) -> None:
    if drv.info().has(CAP_TIME):
        drv.advance(max(t_s - clock(), 0.0))
    else:
        while (left := t_s - clock()) > 0:
            time.sleep(min(left, 1.0))


def board_drift_ages(hours: float) -> tuple[float, ...]:
    """Read ages for a board (real waiting): 0 s, then 3 geometric steps up to ``hours``."""
    end = max(hours * 3600.0, 3.0)
    return (0.0, end / 9.0, end / 3.0, end)


def measure(drv: Driver, plan: Plan, tick: Tick | None = None) -> Measurements:
    """Run the phases of the module doc on ``plan.region``; returns the raw measurements."""
    tick = tick or (lambda phase, frac: None)
    info = drv.info()
    region = plan.region
    rd = _Reader(drv, region)
    timings: dict[str, float] = {}
    shape = (*region.shape, info.devices_per_cell)

    t = time.perf_counter()
    drv.reset(region)
    r = rd.reads(plan.reads)
    reset_mean, reset_var = r.mean(0), r.var(0, ddof=1)
    tick("reset", 1.0)
    timings["reset"] = time.perf_counter() - t

    t = time.perf_counter()
    n_k = plan.set_pulses + plan.sat_pulses
    curve = np.empty((n_k + 1, reset_mean.size), np.float32)
    curve[0] = rd.reads(plan.set_reads).mean(0)
    ones = np.ones(shape, np.int32)
    for k in range(1, n_k + 1):
        drv.apply_pulses(region, ones)
        curve[k] = rd.reads(plan.set_reads).mean(0)
        tick("set", k / n_k)
    timings["set"] = time.perf_counter() - t

    t = time.perf_counter()
    g_reset = float(np.median(reset_mean))
    levels = np.array([f * info.g_max_us for f in plan.levels], np.float64)
    n_bands = levels.size + 1
    band = np.repeat((np.arange(region.cols) * n_bands // region.cols)[None, :], region.rows, 0)
    g_net_max = float(info.g_net_max_us or info.g_max_us - info.g_min_us)
    high = 0.95 * g_net_max
    targets = np.where(
        band < levels.size, (levels[np.minimum(band, levels.size - 1)] - g_reset) / 2, high
    )
    targets = np.clip(targets, 0.0, g_net_max).astype(np.float32)
    drv.program(region, targets, tolerance_us=ONE_SHOT_TOLERANCE_US, max_iterations=1)
    clock = _clock(drv)
    t_prog = clock()
    ages = plan.drift_ages_s if info.has(CAP_TIME) else board_drift_ages(plan.drift_hours)
    first = rd.reads(plan.reads).reshape(plan.reads, *shape)
    first_mean = first.mean(0)
    dev = np.argmax(first_mean, axis=-1)  # the programmed device of each cell

    def pick(x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], *shape)
        return np.take_along_axis(x, dev[None, ..., None], -1)[..., 0].reshape(x.shape[0], -1)

    dm, dv, mean_ages = [], [], []
    for i, age in enumerate(ages):
        if i:
            _wait_until(drv, clock, t_prog + age)
        t_read = clock()
        x = pick(first.reshape(plan.reads, -1)) if i == 0 else pick(rd.reads(plan.reads))
        mean_ages.append(0.5 * (t_read + clock()) - t_prog if i else 0.0)
        dm.append(x.mean(0))
        dv.append(x.var(0, ddof=1))
        tick("drift", (i + 1) / len(ages))
    timings["program+drift"] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (min(256, info.limits.max_batch), region.rows)).astype(np.float32)
    mvm_random = drv.mvm(region, x)
    mvm_ones = drv.mvm(region, np.ones((1, region.rows), np.float32))[0]

    t = time.perf_counter()
    drv.program(region, targets, tolerance_us=plan.tolerance_us, max_iterations=plan.max_iterations)
    v = rd.reads(plan.reads).reshape(plan.reads, *shape).mean(0)
    net = ((v[..., 0] + v[..., 1]) - (v[..., 2] + v[..., 3])) / 2
    tick("verify", 1.0)
    timings["verify"] = time.perf_counter() - t
    return Measurements(
        info=info.model_dump(mode="json"),
        region=region,
        reset_mean=reset_mean,
        reset_var=reset_var,
        set_curve=curve,
        set_reads=plan.set_reads,
        levels_us=np.append(levels, np.nan),
        band=band.ravel(),
        prog_device=dev.ravel(),
        ages_s=np.array(mean_ages),
        drift_mean=np.array(dm),
        drift_var=np.array(dv),
        landed=first_mean.reshape(-1, info.devices_per_cell),
        verify_net=net.ravel(),
        targets_us=targets.ravel().astype(np.float64),
        reads=plan.reads,
        any_negative_read=rd.negative,
        mvm_random=mvm_random,
        mvm_ones=mvm_ones,
        timings_s=timings,
    )
