"""Benchmark the PCM simulator; prints JSON and writes results/bench_simulator.json.

Wall-clock medians are the targets' figures; ``*_cpu_*`` twins give process CPU time,
which is what to compare when the machine is shared (see ``load_average_1min``).

Figures (medians; noisy MVM and plain matmul interleaved in the same run so their ratio
is fair on a shared machine):

- ``noisy_mvm_b64_us``: ``Chip.mvm`` on a full 256x256 region, batch 64, hermes (DAC, drift,
  read noise sampled in the output domain, ADC), cache warm.
- ``numpy_matmul_b64_us``: plain float32 ``x @ W`` of the same shape.
- ``ratio_noisy_vs_numpy``: ratio of the medians over 5 interleaved rounds;
  ``ratio_noisy_vs_numpy_min_round``: the smallest per-round ratio (the least disturbed
  round on a shared machine), ``ratio_noisy_vs_numpy_rounds`` all of them.
- ``per_device_noise_b64_us``: the naive exact alternative, drawing read noise for all
  262,144 devices for every input row.
- ``apply_pulses_full_array_ms``: full array, counts uniform in 0..4 per device.
- ``program_trainer_net_ms``: program-and-verify of a 150x88 and an 88x150 matrix.
- ``state_bytes_per_chip``, ``save_ms``, ``load_ms``, ``mvm_cache_rebuild_ms``.

Usage: ``python scripts/bench_simulator.py [--out results/bench_simulator.json] [--quick]``
"""

# ruff: noqa: E402  (thread limits must be set before numpy is imported)
from __future__ import annotations

import os

# One BLAS thread (both sides of the ratio): on a shared 2-core machine a second thread
# only adds contention. Recorded in the JSON.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hil.logging import configure_logging
from protocols.cell import net_conductance
from simulator import Chip, Region, physics


def median_s(fn: Callable[[], object], reps: int) -> float:
    """Median wall time (s) of ``fn``."""
    return median_times(fn, reps)[0]


def median_times(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (s) of ``fn`` (CPU time is the fairer
    figure on a shared machine: it excludes time spent waiting for a core)."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return float(np.median(wall)), float(np.median(cpu))


def per_device_noise_mvm(
    chip: Chip, region: Region, x: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Naive exact MVM: fresh per-device read noise for every input row."""
    g_t = chip.true_conductances(region)
    pop = chip._pop
    rs, cs = region.slices
    rel = physics.read_sigma_rel(
        pop.arrays["g_prog_us"][rs, cs], chip.time_s - pop.arrays["t_prog_s"][rs, cs], chip.params
    )
    sig = g_t * rel
    out = np.empty((x.shape[0], region.ncols), np.float32)
    for b in range(x.shape[0]):
        noisy = g_t + sig * rng.standard_normal(g_t.shape, dtype=np.float32)
        out[b] = x[b] @ net_conductance(noisy)
    return out


def run(quick: bool) -> dict[str, object]:
    reps = 50 if quick else 300
    rng = np.random.default_rng(0)
    full = Region.full(0)
    chip = Chip(0, "hermes", seed=1)
    chip.program(full, rng.uniform(-4, 4, (256, 256)).astype(np.float32))
    chip.advance(60.0)
    x = rng.uniform(-1, 1, (64, 256)).astype(np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    mvm_t, mm_t, mvm_c, mm_c = [], [], [], []
    for _ in range(5):  # interleave rounds
        w_s, c_s = median_times(lambda: chip.mvm(full, x), reps // 5)
        mvm_t.append(w_s)
        mvm_c.append(c_s)
        w_s, c_s = median_times(lambda: x @ w, reps // 5)
        mm_t.append(w_s)
        mm_c.append(c_s)
    noisy_us, mm_us = float(np.median(mvm_t)) * 1e6, float(np.median(mm_t)) * 1e6
    noisy_cpu_us, mm_cpu_us = float(np.median(mvm_c)) * 1e6, float(np.median(mm_c)) * 1e6
    per_dev_us = median_s(lambda: per_device_noise_mvm(chip, full, x, rng), 2 if quick else 5) * 1e6

    def rebuild() -> None:
        chip._cache.clear()
        chip.mvm(full, x[:1])

    rebuild_ms = median_s(rebuild, 10) * 1e3
    counts = rng.integers(0, 5, (256, 256, 4))
    pulses_wall_s, pulses_cpu_s = median_times(
        lambda: chip.apply_pulses(full, counts), 10 if quick else 30
    )

    layer1, layer2 = Region(0, 0, 150, 0, 88), Region(0, 150, 238, 88, 238)
    t1 = rng.uniform(-4, 4, layer1.shape).astype(np.float32)
    t2 = rng.uniform(-4, 4, layer2.shape).astype(np.float32)
    prog_chip = Chip(0, "hermes", seed=2)
    t = time.perf_counter()
    r1 = prog_chip.program(layer1, t1)
    r2 = prog_chip.program(layer2, t2)
    program_ms = (time.perf_counter() - t) * 1e3

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chip.npz"
        save_ms = median_s(lambda: chip.save(path), 3) * 1e3
        load_ms = median_s(lambda: Chip.load(path), 3) * 1e3
        file_bytes = path.stat().st_size

    return {
        "noisy_mvm_b64_us": round(noisy_us, 1),
        "numpy_matmul_b64_us": round(mm_us, 1),
        "ratio_noisy_vs_numpy": round(noisy_us / mm_us, 2),
        "ratio_noisy_vs_numpy_min_round": round(
            min(a / b for a, b in zip(mvm_t, mm_t, strict=True)), 2
        ),
        "ratio_noisy_vs_numpy_rounds": [round(a / b, 2) for a, b in zip(mvm_t, mm_t, strict=True)],
        "noisy_mvm_b64_cpu_us": round(noisy_cpu_us, 1),
        "numpy_matmul_b64_cpu_us": round(mm_cpu_us, 1),
        "ratio_noisy_vs_numpy_cpu": round(noisy_cpu_us / mm_cpu_us, 2),
        "per_device_noise_b64_us": round(per_dev_us, 1),
        "speedup_vs_per_device_noise": round(per_dev_us / noisy_us, 1),
        "apply_pulses_full_array_ms": round(pulses_wall_s * 1e3, 2),
        "apply_pulses_full_array_cpu_ms": round(pulses_cpu_s * 1e3, 2),
        "program_trainer_net_ms": round(program_ms, 1),
        "program_trainer_net_rms_error_us": round(max(r1.rms_error_us, r2.rms_error_us), 3),
        "mvm_cache_rebuild_ms": round(rebuild_ms, 2),
        "state_bytes_per_chip": chip.state_bytes,
        "state_file_bytes": file_bytes,
        "save_ms": round(save_ms, 1),
        "load_ms": round(load_ms, 1),
        "targets": {
            "ratio_noisy_vs_numpy_max": 4.0,
            "speedup_vs_per_device_noise_min": 100.0,
            "apply_pulses_full_array_ms_max": 20.0,
            "state_bytes_per_chip_max": 2**24,
        },
        "machine": f"{platform.machine()} {platform.python_version()} numpy {np.__version__}",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_simulator.json"))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    configure_logging("warning")  # keep stdout clean for the JSON / file list
    result = run(args.quick)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
