"""Board link benchmark: bytes and round trips per MVM and per full-array pulse update, and
MVM throughput over the emulated link (pty at 921600 baud, and socket://).

Starts ``hil board-emulator`` (hermes preset) as a subprocess for each transport, opens
``board://?port=…`` (the real HardwareDriver, VISA on pyvisa-sim) and measures:

- ``*_bytes`` / ``*_round_trips``: bytes written + read and command frames for one
  full-array (256x256) MVM at batch 1 and 64, one full-array pulse update (0-2 SET
  pulses on every device: the dense map) and one with 1 % of the devices pulsed (sparse);
- ``*_mvm_per_s``: full-array batch-1 MVMs per second (median of 3 timed runs);
- ``inprocess_*``: the same MVMs on an in-process ``simulator.Chip`` (the compute floor);
- ``*_theoretical_921600_*``: the same byte counts on a real 921600-baud 8N1 line
  (10 bits per byte; a pty has no baud limit, so this is the physical bound).

Usage: ``python scripts/bench_board.py [--n 200] [--out results/bench_board.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers.board import open_board  # noqa: E402
from protocols import Region  # noqa: E402

BAUD = 921600
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def start_emulator(tcp: bool) -> tuple[subprocess.Popen[str], str]:
    args = ["--tcp", "0"] if tcp else ["--pty"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil", "--log-level", "warning", "board-emulator", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def wire(d, fn) -> tuple[int, int]:
    s = d.link.stats
    b0, f0 = s.bytes_written + s.bytes_read, s.frames_sent
    fn()
    return s.bytes_written + s.bytes_read - b0, s.frames_sent - f0


def measure(tcp: bool, n: int) -> dict[str, float]:
    name = "socket" if tcp else "pty"
    proc, port = start_emulator(tcp)
    out: dict[str, float] = {}
    try:
        with open_board(f"board://?port={port}&baudrate={BAUD}") as d:
            full = Region(0, 0, 256, 0, 256)
            rng = np.random.default_rng(0)
            x1 = rng.uniform(-1, 1, (1, 256)).astype(np.float32)
            x64 = rng.uniform(-1, 1, (64, 256)).astype(np.float32)
            d.mvm(full, x1)  # chip selected, caches warm
            out["mvm_b1_bytes"], out["mvm_b1_round_trips"] = wire(d, lambda: d.mvm(full, x1))
            out["mvm_b64_bytes"], out["mvm_b64_round_trips"] = wire(d, lambda: d.mvm(full, x64))
            counts = rng.integers(0, 3, (256, 256, 4)).astype(np.int32)
            out["pulse_full_bytes"], out["pulse_full_round_trips"] = wire(
                d, lambda: d.apply_pulses(full, counts)
            )
            sparse = np.where(rng.random(counts.shape) < 0.01, 1 + counts, 0).astype(np.int32)
            out["pulse_sparse1pct_bytes"], out["pulse_sparse1pct_round_trips"] = wire(
                d, lambda: d.apply_pulses(full, sparse)
            )
            rates = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(n):
                    d.mvm(full, x1)
                rates.append(n / (time.perf_counter() - t0))
            out["mvm_b1_per_s"] = statistics.median(rates)
            t0 = time.perf_counter()
            for _ in range(max(n // 20, 3)):
                d.mvm(full, x64)
            out["mvm_b64_vectors_per_s"] = 64 * max(n // 20, 3) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            d.apply_pulses(full, counts)
            out["pulse_full_s"] = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    return {f"{name}_{k}": float(v) for k, v in out.items()}


def in_process(n: int) -> dict[str, float]:
    """The same MVMs on an in-process simulator chip (no link): the compute floor."""
    from simulator import Chip
    from simulator import Region as SimRegion

    chip, full = Chip(0, "hermes", 0), SimRegion(0, 0, 256, 0, 256)
    rng = np.random.default_rng(0)
    x1, x64 = rng.uniform(-1, 1, (1, 256)), rng.uniform(-1, 1, (64, 256))
    chip.mvm(full, x1)
    t0 = time.perf_counter()
    for _ in range(n):
        chip.mvm(full, x1)
    b1 = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(max(n // 20, 3)):
        chip.mvm(full, x64)
    b64 = 64 * max(n // 20, 3) / (time.perf_counter() - t0)
    return {"inprocess_mvm_b1_per_s": b1, "inprocess_mvm_b64_vectors_per_s": b64}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="MVMs per timed run (default 200)")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_board.json"))
    args = ap.parse_args()
    res: dict[str, object] = {"baudrate": BAUD, "region": "256x256", "preset": "hermes"}
    res.update(in_process(args.n))
    res.update(measure(tcp=False, n=args.n))
    res.update(measure(tcp=True, n=args.n))
    line_s = BITS_PER_BYTE / BAUD
    for key in ("mvm_b1", "mvm_b64", "pulse_full", "pulse_sparse1pct"):
        res[f"theoretical_921600_{key}_s"] = res[f"pty_{key}_bytes"] * line_s
    res["theoretical_921600_mvm_b1_per_s"] = 1.0 / res["theoretical_921600_mvm_b1_s"]
    res["machine"] = (
        f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}"
    )
    text = json.dumps(res, indent=2, sort_keys=True)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
