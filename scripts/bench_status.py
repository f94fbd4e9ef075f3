"""Benchmark ``status`` latency on a busy ``hil serve``: idle, then with 8 busy clients.

One server (``sim://?preset=hermes``, TCP loopback). ``status`` round trips are timed
first with no other client, then while 8 client processes each loop on their own 32x32
region (a batch-64 MVM, then an ``apply_pulses``) until told to stop. The server handles
requests one at a time, so a status request waits behind the requests queued before it;
the figure says how long an operator waits for ``hil status`` on a loaded chip.

Usage: python scripts/bench_status.py [--calls 100] [--clients 8] [--out results/bench_status.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from drivers.remote import RemoteDriver

_BUSY = """
import logging, sys, time
import numpy as np
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from drivers.remote import RemoteDriver
from protocols import Region
endpoint, k, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
region = Region(k % 2, 32 * (k // 2), 32 * (k // 2) + 32, 0, 32)
rng = np.random.default_rng(k)
x = rng.uniform(-1, 1, (64, 32)).astype(np.float32)
n = 0
deadline = time.monotonic() + 600
with RemoteDriver(endpoint, timeout_s=30, client_name=f"busy{k}") as d:
    print("ready", flush=True)
    import os
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        d.mvm(region, x)
        d.apply_pulses(region, rng.integers(0, 2, (32, 32, 4)))
        n += 2
print(n, flush=True)
"""


def _status_ms(endpoint: str, calls: int) -> list[float]:
    out = []
    with RemoteDriver(endpoint, timeout_s=30, client_name="operator") as d:
        d.status()
        for _ in range(calls):
            t0 = time.perf_counter()
            d.status()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", default="results/bench_status.json")
    args = ap.parse_args()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "hil", "--log-level", "warning", "serve",
         "sim://?preset=hermes&seed=0", "--bind", "tcp://127.0.0.1:*"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    busy: list[subprocess.Popen[str]] = []
    stop_file = Path(f"/tmp/bench_status_stop_{os.getpid()}")
    stop_file.unlink(missing_ok=True)
    try:
        line = serve.stdout.readline()  # type: ignore[union-attr]
        endpoint = line.split()[-1]
        idle = _status_ms(endpoint, args.calls)
        for k in range(args.clients):
            p = subprocess.Popen(
                [sys.executable, "-c", _BUSY, endpoint, str(k), str(stop_file)],
                stdout=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            busy.append(p)
        for p in busy:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        loaded = _status_ms(endpoint, args.calls)
        elapsed = time.monotonic() - t0
        stop_file.touch()
        done = [int(p.stdout.readline()) for p in busy]  # type: ignore[union-attr]
    finally:
        stop_file.touch()
        for p in busy:
            p.wait(60)
            if p.stdout is not None:
                p.stdout.close()
        serve.terminate()
        serve.wait(30)
        if serve.stdout is not None:
            serve.stdout.close()
        stop_file.unlink(missing_ok=True)
    res = {
        "benchmark": "bench_status",
        "calls": args.calls,
        "busy_clients": args.clients,
        "status_idle_p50_ms": round(float(np.percentile(idle, 50)), 2),
        "status_idle_p99_ms": round(float(np.percentile(idle, 99)), 2),
        "status_busy_p50_ms": round(float(np.percentile(loaded, 50)), 2),
        "status_busy_p99_ms": round(float(np.percentile(loaded, 99)), 2),
        "busy_requests_per_s": round(sum(done) / max(elapsed, 1e-9), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}",
    }
    text = json.dumps(res, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
