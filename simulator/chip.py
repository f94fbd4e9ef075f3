"""One 256x256 PCM crossbar chip of 4-device unit cells: MVM, reads, pulses, programming.

MVM (docs/ARCHITECTURE.md): for inputs ``x`` (batch, rows) in [-1, 1],

    x_q = round(x L_in)/L_in,  L_in = 2^(dac_bits-1) - 1            (8-bit signed PWM)
    y   = x_q @ G_net(t) + sqrt(x_q^2 @ V(t)) * xi,   xi ~ N(0, 1) per (batch, col)
    y_q = clip(round(y/lsb), -L_out, L_out) lsb,  lsb = full_scale/L_out   (ADC)

with ``G_net(t) = ((G_A+ + G_B+) - (G_A- + G_B-))/2`` of the drifted conductances and
``V_ij = sum_d (sigma_ijd/2)^2``, ``sigma_ijd = G_ijd(t) sigma_rel,ijd`` (1/f read noise,
§5). Because per-device read noise is independent Gaussian, the column noise is Gaussian
with exactly this variance, so sampling in the output domain is exact in distribution and
fresh for every input row.

Cache approximation: ``G_net(t)`` and ``V(t)`` are cached per region at time ``t_c`` and
reused at ``t`` while the largest relative change of any device's drift factor or read-noise
std is at most ``cache_rel_tol`` (default 1e-4), bounded by
``max(nu_max, 1/(2 ln_min)) * ln(1 + (t - t_c)/(age_min + t0))`` where ``age_min`` is the
youngest device's age and ``ln_min = ln((age_min + t0 + t_read)/(2 t_read))``. Any write
to an overlapping region drops the entry.

Tenant streams (:meth:`Chip.stream`): requests made inside ``with chip.stream(key,
regions)`` draw their write and read noise from RNGs of their own,
``SeedSequence(seed, spawn_key=(chip_id, STREAM_TAG, *key))``, and move a clock of their
own (it starts at the later of the last explicit :meth:`Chip.advance` outside any stream,
i.e. deliberate ageing of the whole chip, and the last programming time of the stream's
regions; never at a time other tenants' traffic moved), with a cache of their own. A shared chip's server gives each run
reservation one stream (``key`` from the run's seed and its regions), so a run's results
on a region do not depend on other runs' traffic or on arrival order.

Randomness: ``SeedSequence(seed, spawn_key=(chip_id,))`` spawns three streams: *init*
(PCG64: device spread, faults, initial state), *write* (PCG64: pulses, programming noise,
nu draws, verify reads) and *read* (SFC64, for speed: MVM and
:meth:`Chip.read_conductances` noise). Reads therefore
never change the future written state; replaying the writes (at their chip times, see
:meth:`Chip.advance_to`) reproduces the state exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from simulator import physics, validation
from simulator.clock import Clock
from simulator.errors import PresetError
from simulator.population import Population
from simulator.presets import DeviceParams, get_preset
from simulator.programming import ProgramResult, program_cells
from simulator.region import ARRAY_SIZE, DEVICES_PER_CELL, Region

log = structlog.get_logger(__name__)

__all__ = ["Chip", "ProgramResult", "PulseResult"]


@dataclass(frozen=True)
class PulseResult:
    """Outcome of :meth:`Chip.apply_pulses` / :meth:`Chip.reset`."""

    n_set_pulses: int
    """SET pulses applied (faulty devices ignore theirs)"""
    n_resets: int
    """RESETs applied"""
    t_s: float
    """chip time after the request (s)"""


STREAM_TAG = 0x7E
"""Spawn-key tag separating tenant streams from the chip's own (``(chip_id,)``)."""


@dataclass
class _Stream:
    """A tenant's clock, write and read RNGs and MVM cache (see :meth:`Chip.stream`)."""

    clock: Clock
    write_rng: np.random.Generator
    read_rng: np.random.Generator
    cache: dict[tuple[int, int, int, int], _CacheEntry]
    start_s: float


@dataclass
class _CacheEntry:
    t_s: float
    g_net: np.ndarray  # (rows, cols) float32 µS
    var: np.ndarray  # (rows, cols) float32 µS^2
    rate: float  # max(nu_max, 1/(2 ln_min))
    age_min_s: float  # youngest device age + t0 (s)


class Chip:
    """A simulated 256x256 PCM crossbar (see module doc). Not thread-safe."""

    def __init__(
        self,
        chip_id: int = 0,
        params: DeviceParams | str = "hermes",
        seed: int = 0,
        *,
        clock: Clock | str = "virtual",
        adc_full_scale_us: float | None = None,
        cache_rel_tol: float = 1e-4,
    ) -> None:
        for name, value in (("chip_id", chip_id), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise validation.InputRangeError(f"Chip {name} must be an int >= 0, got {value!r}")
        if isinstance(params, str):
            params = get_preset(params)
        if not isinstance(params, DeviceParams):
            raise PresetError(
                f"Chip params must be a preset name or a DeviceParams, got {type(params).__name__}"
            )
        self._chip_id = int(chip_id)
        self._params = params
        self._seed = int(seed)
        self._clock = Clock(clock) if isinstance(clock, str) else clock
        self.adc_full_scale_us = (
            self._params.adc_full_scale_us if adc_full_scale_us is None else adc_full_scale_us
        )
        self.cache_rel_tol = float(cache_rel_tol)
        init, write, read = np.random.SeedSequence(self._seed, spawn_key=(self._chip_id,)).spawn(3)
        self._write_rng = np.random.Generator(np.random.PCG64(write))
        self._read_rng = np.random.Generator(np.random.SFC64(read))
        self._pop = Population.create(
            self._params, np.random.Generator(np.random.PCG64(init)), self._clock.time_s
        )
        self._cache: dict[tuple[int, int, int, int], _CacheEntry] = {}
        self._streams: dict[tuple[int, ...], _Stream] = {}
        self._scratch_bufs: dict[str, np.ndarray] = {}
        self._in_stream = False
        self._aged_s = self._clock.time_s

    def __repr__(self) -> str:
        return (
            f"Chip(chip_id={self._chip_id}, preset={self._params.name!r}, seed={self._seed}, "
            f"clock={self._clock.mode!r}, time_s={self.time_s:.9g})"
        )

    # ----------------------------------------------------------------- properties
    @property
    def chip_id(self) -> int:
        return self._chip_id

    @property
    def params(self) -> DeviceParams:
        return self._params

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def time_s(self) -> float:
        """The chip's current time (s)."""
        return self._clock.time_s

    @property
    def adc_full_scale_us(self) -> float:
        """ADC saturation level (µS), symmetric; settable."""
        return self._adc_full_scale_us

    @adc_full_scale_us.setter
    def adc_full_scale_us(self, value: float) -> None:
        if not 0 < float(value) < float("inf"):
            raise validation.InputRangeError(f"adc_full_scale_us must be > 0, got {value!r}")
        self._adc_full_scale_us = float(value)

    @property
    def state_bytes(self) -> int:
        """Bytes of persistent device state (excludes caches)."""
        return self._pop.nbytes

    def advance(self, dt_s: float) -> float:
        """Let ``dt_s`` seconds pass (devices drift); returns the new time."""
        t = self._clock.advance(dt_s)
        if not self._in_stream:
            self._aged_s = t
        return t

    def advance_to(self, t_s: float) -> float:
        """Move the clock forward to ``t_s`` (for journal replay); returns the new time."""
        return self._clock.advance_to(t_s)

    # ----------------------------------------------------------------- tenant streams
    @contextmanager
    def stream(
        self,
        key: tuple[int, ...] | None,
        regions: tuple[Region, ...] = (),
        start_s: float | None = None,
    ) -> Iterator[None]:
        """Within the block, requests use the tenant stream ``key`` (module doc), created
        on first use; its clock starts at ``start_s`` if given (a journal replay), else
        at the later of the chip clock and the last programming time of ``regions``'
        devices. ``key=None``: the chip's own streams."""
        if key is None:
            yield
            return
        key = tuple(int(k) for k in key)
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = self._new_stream(key, regions, start_s)
        saved = (self._clock, self._write_rng, self._read_rng, self._cache, self._in_stream)
        self._clock, self._write_rng, self._read_rng, self._cache = (
            st.clock,
            st.write_rng,
            st.read_rng,
            st.cache,
        )
        self._in_stream = True
        try:
            yield
        finally:
            self._clock, self._write_rng, self._read_rng, self._cache, self._in_stream = saved

    def _new_stream(
        self, key: tuple[int, ...], regions: tuple[Region, ...], start_s: float | None
    ) -> _Stream:
        write, read = np.random.SeedSequence(
            self._seed, spawn_key=(self._chip_id, STREAM_TAG, *key)
        ).spawn(2)
        t0 = self._aged_s
        for r in regions:
            r = validation.check_region(r, self._chip_id)
            rs, cs = r.slices
            t0 = max(t0, float(self._pop.arrays["t_prog_s"][rs, cs].max()))
        if start_s is not None:
            t0 = float(start_s)
        return _Stream(
            Clock(self._clock.mode, t0),
            np.random.Generator(np.random.PCG64(write)),
            np.random.Generator(np.random.SFC64(read)),
            {},
            t0,
        )

    def stream_start_s(self, key: tuple[int, ...]) -> float | None:
        """The start time of tenant stream ``key`` (None if there is none)."""
        st = self._streams.get(tuple(int(k) for k in key))
        return None if st is None else st.start_s

    def end_stream(self, key: tuple[int, ...]) -> bool:
        """Forget tenant stream ``key`` (its run released its regions); True if it existed."""
        return self._streams.pop(tuple(int(k) for k in key), None) is not None

    @property
    def streams(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self._streams)

    # ----------------------------------------------------------------- reads
    def mvm(self, region: Region, x: np.ndarray, *, inputs_checked: bool = False) -> np.ndarray:
        """Noisy MVM ``(batch, rows) -> (batch, cols)`` float32 µS (module doc).

        ``inputs_checked=True``: the caller has already checked ``x`` as
        :func:`simulator.validation.check_inputs` would (a float array of this shape with
        values in [-1, 1]; the driver layer's check does), so its range is not scanned again.
        """
        region = validation.check_region(region, self._chip_id)
        x = self._inputs(x, region.nrows, "rows", inputs_checked)
        entry = self._entry(region)
        return self._mvm(x, entry.g_net, entry.var)

    def mvm_t(self, region: Region, x: np.ndarray, *, inputs_checked: bool = False) -> np.ndarray:
        """Transposed MVM: inputs drive the columns, ``(batch, cols) -> (batch, rows)`` µS."""
        region = validation.check_region(region, self._chip_id)
        x = self._inputs(x, region.ncols, "columns", inputs_checked)
        entry = self._entry(region)
        return self._mvm(x, entry.g_net.T, entry.var.T)

    @staticmethod
    def _inputs(x: np.ndarray, n: int, what: str, checked: bool) -> np.ndarray:
        if not checked:
            return validation.check_inputs(x, n, what)
        if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim == 2):
            raise validation.ShapeError("inputs_checked=True needs a 2-D float ndarray")
        if x.shape[1] != n or x.shape[0] < 1:
            raise validation.ShapeError(
                f"mvm inputs must have shape (batch, {n}) for the region's {what}, got {x.shape}"
            )
        return x

    def _mvm(self, x: np.ndarray, g_net: np.ndarray, var: np.ndarray) -> np.ndarray:
        # DAC levels are folded into the scale: y = (round(x L) @ G) / L, and the noise std
        # sqrt(round(x L)^2 @ V) / L, so the quantised inputs are never rescaled.
        # Temporaries live in the chip's scratch buffers (fresh pages per call are costly);
        # only ``y`` is a new array (it is returned).
        p = self._params
        batch, n_out = x.shape[0], g_net.shape[1]
        xq = self._scratch("xq", x.shape)
        if p.dac_bits is not None:
            levels_in = float(2 ** (p.dac_bits - 1) - 1)
            np.multiply(x, np.float32(levels_in), out=xq, dtype=np.float32)
            np.rint(xq, out=xq)
        else:
            levels_in = 1.0
            np.copyto(xq, x, casting="same_kind")
        y = xq @ g_net
        if p.read_noise:
            np.square(xq, out=xq)
            s = np.matmul(xq, var, out=self._scratch("s", (batch, n_out)))
            np.sqrt(s, out=s)
            z = self._scratch("z", (batch * n_out + 1,))
            s *= physics.fast_normal_raw(self._read_rng, s.shape, out=z)
            y += s
        if p.adc_bits is not None:
            levels = 2 ** (p.adc_bits - 1) - 1
            lsb = self._adc_full_scale_us / levels
            y *= np.float32(1.0 / (lsb * levels_in))
            np.rint(y, out=y)
            np.clip(y, -levels, levels, out=y)
            y *= np.float32(lsb)
        elif levels_in != 1.0:
            y *= np.float32(1.0 / levels_in)
        self._clock.tick(x.shape[0] * p.mvm_latency_s)
        return y

    def _scratch(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 C-contiguous scratch array of ``shape`` (contents undefined), a view of
        a per-chip buffer that grows as needed and is reused by the next call (MVM
        temporaries; never returned to a caller)."""
        n = math.prod(shape)
        buf = self._scratch_bufs.get(name)
        if buf is None or buf.size < n:
            buf = self._scratch_bufs[name] = np.empty(max(n, 1), np.float32)
        return buf[:n].reshape(shape)

    def _entry(self, region: Region) -> _CacheEntry:
        t = self._clock.time_s
        entry = self._cache.get(region.key)
        if entry is not None:
            bound = entry.rate * math.log1p(max(t - entry.t_s, 0.0) / entry.age_min_s)
            if bound <= self.cache_rel_tol:
                return entry
        entry = self._build_entry(region, t)
        if len(self._cache) >= 16:
            self._cache.pop(next(iter(self._cache)))
        self._cache[region.key] = entry
        return entry

    def _build_entry(self, region: Region, t_s: float) -> _CacheEntry:
        """Drifted ``G_net`` and noise variance ``V`` of a region at ``t_s`` (row blocks of
        32 keep temporaries small and cached)."""
        a = self._pop.arrays
        p = self._params
        g_net = np.empty(region.shape, np.float32)
        var = np.empty(region.shape, np.float32)
        nu_max, t_prog_max = 0.0, -math.inf
        cs = slice(region.col0, region.col1)
        for r0 in range(region.row0, region.row1, 32):
            rs = slice(r0, min(r0 + 32, region.row1))
            out = slice(r0 - region.row0, rs.stop - region.row0)
            t_prog, nu = a["t_prog_s"][rs, cs], a["nu"][rs, cs]
            age = t_s - t_prog
            g_prog = a["g_prog_us"][rs, cs]
            g = physics.drift_factor(age, nu, p.t0_s)  # own array: made G in place
            g *= g_prog
            g_net[out] = ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) * np.float32(0.5)
            sig = physics.read_sigma_rel(g_prog, age, p)  # own array: made sigma in place
            sig *= g
            sig *= np.float32(0.5)
            var[out] = np.einsum("ijd,ijd->ij", sig, sig)
            nu_max = max(nu_max, float(nu.max()))
            t_prog_max = max(t_prog_max, float(t_prog.max()))
        age_min = max(t_s - t_prog_max, 0.0) + p.t0_s
        ln_min = math.log((age_min + p.t_read_s) / (2 * p.t_read_s))
        rate = max(nu_max, 0.5 / ln_min)
        return _CacheEntry(t_s, g_net, var, rate, age_min)

    def read_conductances(self, region: Region) -> np.ndarray:
        """Per-device noisy read ``(rows, cols, 4)`` float32 µS (slow path; read stream).

        Modelled as 4 one-hot reads per row: the clock advances by ``4 rows`` MVM latencies.
        """
        region = validation.check_region(region, self._chip_id)
        idx = self._device_index(region).reshape(-1)
        g = self._pop.read(idx, self._clock.time_s, self._read_rng)
        self._clock.tick(DEVICES_PER_CELL * region.nrows * self._params.mvm_latency_s)
        return g.astype(np.float32).reshape(*region.shape, DEVICES_PER_CELL)

    def true_conductances(self, region: Region) -> np.ndarray:
        """Noise-free drifted conductances ``(rows, cols, 4)`` float32 µS (diagnostics)."""
        region = validation.check_region(region, self._chip_id)
        idx = self._device_index(region).reshape(-1)
        g = self._pop.conductance(idx, self._clock.time_s)
        return g.astype(np.float32).reshape(*region.shape, DEVICES_PER_CELL)

    def device_g_max_us(self, region: Region) -> np.ndarray:
        """Each device's own G_max ``(rows, cols, 4)`` float32 µS (device-to-device spread)."""
        region = validation.check_region(region, self._chip_id)
        rs, cs = region.slices
        return self._pop.arrays["g_max_us"][rs, cs].copy()

    def fault_map(self, region: Region) -> np.ndarray:
        """Fault codes ``(rows, cols, 4)`` uint8: 0 ok, 1 stuck RESET, 2 stuck g_max, 3 dead."""
        region = validation.check_region(region, self._chip_id)
        rs, cs = region.slices
        return self._pop.arrays["fault"][rs, cs].copy()

    # ----------------------------------------------------------------- writes
    def apply_pulses(
        self, region: Region, counts: np.ndarray, reset_mask: np.ndarray | None = None
    ) -> PulseResult:
        """RESET devices in ``reset_mask`` first, then ``counts`` SET pulses per device.

        Pulses act on all devices in parallel; the clock advances by
        ``(any reset + max count) pulse_time_s``.
        """
        region = validation.check_region(region, self._chip_id)
        counts = validation.check_counts(counts, region)
        shape = (*region.shape, DEVICES_PER_CELL)
        n_resets = 0
        t = self._clock.time_s
        if reset_mask is not None:
            reset_mask = validation.check_mask(reset_mask, shape, "reset_mask")
            if reset_mask.any():
                n_resets = self._pop.reset(self._flat(region, reset_mask), t, self._write_rng)
                self._clock.tick(self._params.pulse_time_s)
        t = self._clock.time_s
        rs, cs = region.slices
        local = np.flatnonzero((counts > 0) & self._pop.healthy_mask[rs, cs])
        n_set = 0
        if local.size:
            flat_counts = counts.reshape(-1)[local]
            n_set = self._pop.set_pulses(
                self._local_to_chip(region, local), flat_counts, t, self._write_rng
            )
            self._clock.tick(int(flat_counts.max()) * self._params.pulse_time_s)
        self._invalidate(region)
        log.debug(
            "apply_pulses", chip=self._chip_id, region=region.key, n_set=n_set, n_resets=n_resets
        )
        return PulseResult(n_set, n_resets, self._clock.time_s)

    def reset(self, region: Region) -> PulseResult:
        """RESET every device of ``region``."""
        region = validation.check_region(region, self._chip_id)
        n = self._pop.reset(
            self._device_index(region).reshape(-1), self._clock.time_s, self._write_rng
        )
        self._clock.tick(self._params.pulse_time_s)
        self._invalidate(region)
        return PulseResult(0, n, self._clock.time_s)

    def program(
        self,
        region: Region,
        target_us: np.ndarray,
        tolerance_us: float | None = None,
        max_iterations: int = 20,
        cell_mask: np.ndarray | None = None,
    ) -> ProgramResult:
        """Program-and-verify net conductances ``target_us`` (rows, cols) µS.

        Cells outside ``cell_mask`` (rows, cols) bool are left untouched (use it for
        refresh). Algorithm and statistics: :mod:`simulator.programming`.
        ``tolerance_us`` defaults to ``params.program_tolerance_us``. Targets are accepted
        up to ``params.g_net_max_us``, but with device A filled to ``fill_fraction g_max``
        the reachable ``|G_net|`` is about ``(1 + fill_fraction)/2 g_max - g_reset``
        (9.7 µS on hermes; all of ``g_net_max_us`` = 25 µS on aihwkit-pcm, whose
        ``fill_fraction`` is 1): map hermes weights to at most ~0.8 ``g_net_max_us``.
        """
        region = validation.check_region(region, self._chip_id)
        target = validation.check_targets(target_us, region, self._params.g_net_max_us)
        tol = validation.check_tolerance(
            self._params.program_tolerance_us if tolerance_us is None else tolerance_us
        )
        max_iterations = validation.check_positive_int(max_iterations, "max_iterations")
        if cell_mask is None:
            cell_mask = np.ones(region.shape, dtype=bool)
        cell_mask = validation.check_mask(cell_mask, region.shape, "cell_mask")
        ii, jj = np.nonzero(cell_mask)
        cells = (ii + region.row0) * ARRAY_SIZE + (jj + region.col0)
        result = program_cells(
            self._pop, cells, target[ii, jj], tol, max_iterations, self._clock, self._write_rng
        )
        self._invalidate(region)
        log.debug(
            "program",
            chip=self._chip_id,
            region=region.key,
            cells=result.n_cells,
            rms_error_us=result.rms_error_us,
            iterations=result.iterations,
        )
        return result

    # ----------------------------------------------------------------- helpers
    def _device_index(self, region: Region) -> np.ndarray:
        rows = np.arange(region.row0, region.row1)[:, None, None]
        cols = np.arange(region.col0, region.col1)[None, :, None]
        return (rows * ARRAY_SIZE + cols) * DEVICES_PER_CELL + np.arange(DEVICES_PER_CELL)

    def _flat(self, region: Region, mask: np.ndarray) -> np.ndarray:
        """Chip-flat device indices of the True entries of a region mask (rows, cols, 4)."""
        return self._local_to_chip(region, np.flatnonzero(mask))

    def _local_to_chip(self, region: Region, local: np.ndarray) -> np.ndarray:
        if region.shape == (ARRAY_SIZE, ARRAY_SIZE):
            return local
        cell, dev = np.divmod(local, DEVICES_PER_CELL)
        i, j = np.divmod(cell, region.ncols)
        return ((i + region.row0) * ARRAY_SIZE + (j + region.col0)) * DEVICES_PER_CELL + dev

    def _invalidate(self, region: Region) -> None:
        """Drop the cache entries of every region overlapping ``region`` (same chip)."""
        r0, r1, c0, c1 = region.key
        for key in [k for k in self._cache if k[0] < r1 and r0 < k[1] and k[2] < c1 and c0 < k[3]]:
            del self._cache[key]

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Atomically write the full state to one ``.npz`` (see :mod:`simulator.persistence`)."""
        from simulator.persistence import save_chip

        return save_chip(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, *, clock_mode: str | None = None) -> Chip:
        """A chip restored from :meth:`save`; it continues exactly as if never stopped."""
        from simulator.persistence import load_chip

        return load_chip(cls, Path(path), clock_mode=clock_mode)

    def to_bytes(self) -> bytes:
        """The full state as the bytes of the ``.npz`` :meth:`save` writes (no file I/O)."""
        from simulator.persistence import chip_to_bytes

        return chip_to_bytes(self)

    @classmethod
    def from_bytes(cls, blob: bytes, *, clock_mode: str | None = None) -> Chip:
        """A chip restored from :meth:`to_bytes`; it continues exactly as if never stopped."""
        from simulator.persistence import chip_from_bytes

        return chip_from_bytes(cls, blob, clock_mode)
