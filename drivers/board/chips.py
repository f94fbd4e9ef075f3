"""The emulated board's analog side: one :class:`simulator.Chip` per board chip id.

:class:`SimChipBackend` is what :class:`~drivers.board.engine.BoardEngine` calls; regions
arrive as ``(row0, row1, col0, col1)`` already validated against the board geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simulator import Chip, Region, get_preset, physics

DEVICES = 4


class SimChipBackend:
    """One simulator chip behind the board firmware."""

    def __init__(self, chip: Chip) -> None:
        self.chip = chip
        p = chip.params
        self.g_min_us = float(p.g_min_us)
        self.g_max_us = float(p.g_max_us)
        self.g_net_max_us = float(p.g_net_max_us)
        # mean conductance step of the first SET pulse after RESET (pcm-physics §2)
        self.set_step_mean_us = physics.first_set_step_us(p)
        if p.adc_bits is not None:
            self.adc_levels: int | None = 2 ** (p.adc_bits - 1) - 1
            self.adc_lsb_us: float | None = chip.adc_full_scale_us / self.adc_levels
        else:
            self.adc_levels = None
            self.adc_lsb_us = None

    def _region(self, key: tuple[int, int, int, int]) -> Region:
        return Region(self.chip.chip_id, *key)

    def time_s(self) -> float:
        return float(self.chip.time_s)

    def mvm(self, key: tuple[int, int, int, int], x: np.ndarray) -> np.ndarray:
        return self.chip.mvm(self._region(key), x)

    def read(self, key: tuple[int, int, int, int]) -> np.ndarray:
        return self.chip.read_conductances(self._region(key))

    def pulse(
        self, key: tuple[int, int, int, int], counts: np.ndarray, reset: np.ndarray | None
    ) -> float:
        return float(self.chip.apply_pulses(self._region(key), counts, reset).t_s)

    def program(
        self,
        key: tuple[int, int, int, int],
        target_us: np.ndarray,
        tolerance_us: float,
        max_iterations: int,
    ) -> dict[str, Any]:
        r = self.chip.program(self._region(key), target_us, tolerance_us, max_iterations)
        return {
            "rms_error_us": r.rms_error_us,
            "max_error_us": r.max_error_us,
            "pulses": r.n_pulses,
            "iterations": min(r.iterations, 0xFFFF),
            "converged": int(r.n_unconverged == 0),
            "time_s": r.t_s,
        }


def make_chips(
    preset: str = "hermes",
    seed: int = 0,
    chip_ids: tuple[int, ...] = (0, 1),
    clock: str = "virtual",
    state_dir: Path | None = None,
) -> dict[int, SimChipBackend]:
    """Board chips backed by simulator chips (one seed; the chip id spawns the stream).

    With ``state_dir`` holding ``chip<ID>.npz`` files (from :func:`save_chips`), the chips
    come back exactly as they were: PCM is non-volatile, so a power-cycled board keeps its
    conductances. Missing files start fresh chips from ``preset`` and ``seed``.
    """
    params = get_preset(preset)
    chips = {}
    for cid in chip_ids:
        path = None if state_dir is None else state_dir / f"chip{cid}.npz"
        if path is not None and path.is_file():
            chip = Chip.load(path, clock_mode=clock)
        else:
            chip = Chip(cid, params, seed, clock=clock)
        chips[cid] = SimChipBackend(chip)
    return chips


def save_chips(chips: dict[int, SimChipBackend], state_dir: Path) -> None:
    """Persist every chip atomically to ``state_dir/chip<ID>.npz``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for cid, backend in chips.items():
        backend.chip.save(state_dir / f"chip{cid}.npz")
