"""``hil health`` benchmark: wall time of the command on a full simulated device (both
chips, 256x256 cells each, 4 devices per cell), in-process (``sim://``) and over a
``hil serve`` with ``--state-dir`` (ipc://), each as a fresh ``python -m hil`` process
(interpreter start, driver open, scan, wear read, report kept and written).

Prints one JSON object: per case the command, its wall time (s), the scan time the report
states (``duration_s``), bad cells/rows/columns found, and the machine's load average
before and after (other users of a shared machine slow it).

Usage: ``python scripts/bench_health.py [--preset hermes] [--out results/bench_health.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hil.procs import ServeProcess  # noqa: E402


def _run(url: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "hil", "--log-level", "warning", "health", url, "--json",
           "--out", str(out)]  # fmt: skip
    load = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    wall = time.perf_counter() - t
    rep = json.loads(proc.stdout)
    return {
        "command": "hil health " + url + " --json",
        "wall_s": round(wall, 2),
        "scan_s": round(rep["duration_s"], 2),
        "devices": sum(c["devices"] for c in rep["chips"]),
        "bad_cells": {c["chip"]: len(c["bad_cells"]) for c in rep["chips"]},
        "bad_rows": {c["chip"]: len(c["bad_rows"]) for c in rep["chips"]},
        "bad_cols": {c["chip"]: len(c["bad_cols"]) for c in rep["chips"]},
        "wear_set_pulses": {w["chip"]: w["set_pulses"] for w in rep["wear"] or []},
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="hermes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sim = f"sim://?preset={args.preset}&seed=0"
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        results["in_process"] = _run(sim, d / "h1")
        with ServeProcess(sim, f"ipc://{d}/dev.sock", ["--state-dir", str(d / "state")]) as srv:
            results["served"] = _run(srv.endpoint, d / "h2")
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
