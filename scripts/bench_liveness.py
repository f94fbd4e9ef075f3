"""Benchmark liveness by arrival: heartbeat round trips while the server's worker is busy.

One server (``sim://?preset=hermes``, TCP loopback, ``--lease-ttl 2``). A client holding a
lease times ``heartbeat`` round trips, first on an idle server, then while another client
keeps the worker busy with back-to-back full-chip ``program`` requests (256x256 cells,
100 verify iterations, about 1-2 s each). Heartbeats are answered by the server's I/O
thread, so they do not wait for a program to finish; the figure is how long they take,
and whether the lease survived (it must: the busy time is several TTLs).

Usage: python scripts/bench_liveness.py [--calls 50] [--programs 4] [--out results/bench_liveness.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from drivers.remote import RemoteDriver
from protocols import Region

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hil.procs import ServeProcess  # noqa: E402


def _heartbeats_ms(d: RemoteDriver, calls: int, until: threading.Event | None) -> list[float]:
    out = []
    while len(out) < calls or (until is not None and not until.is_set()):
        t0 = time.perf_counter()
        d.heartbeat()
        out.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.05)
        if until is None and len(out) >= calls:
            break
    return out


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--programs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("results/bench_liveness.json"))
    args = ap.parse_args()
    extra = ["--lease-ttl", "2", "--heartbeat-interval", "0.5"]
    with ServeProcess("sim://?preset=hermes&seed=0", "tcp://127.0.0.1:*", extra) as srv:
        alice = RemoteDriver(srv.endpoint, client_name="alice")
        bob = RemoteDriver(srv.endpoint, client_name="bob", timeout_s=120, retries=0)
        try:
            lease = Region(0, 0, 8, 0, 8)
            alice.acquire_lease(lease)
            idle = _heartbeats_ms(alice, args.calls, None)
            done = threading.Event()
            program_s: list[float] = []

            def busy() -> None:
                target = np.full((256, 256), 5.0, np.float32)
                for i in range(args.programs):
                    t0 = time.perf_counter()
                    bob.program(Region(1, 0, 256, 0, 256), target, tolerance_us=0.01,
                                max_iterations=100, request_id=f"busy{i}")  # fmt: skip
                    program_s.append(time.perf_counter() - t0)
                done.set()

            worker = threading.Thread(target=busy)
            worker.start()
            loaded = _heartbeats_ms(alice, 1, done)
            worker.join()
            alive = alice.heartbeat().leases == 1
        finally:
            bob.close()
            alice.close()
    result = {
        "heartbeat_idle": _pct(idle),
        "heartbeat_while_busy": _pct(loaded),
        "programs_s": program_s,
        "busy_s": float(sum(program_s)),
        "lease_ttl_s": 2.0,
        "lease_survived": alive,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
