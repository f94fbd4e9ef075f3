"""Epoch time of the tuned HIL run: in-process simulator, over ``hil serve`` on TCP, software.

``configs/jsb_osttp_hil_tuned.yaml`` (full JSB training split, batch 16) for ``--epochs``
epochs, three ways, interleaved in ``--repeats`` rounds so that each sees the same machine
load: the in-process ``sim://`` simulator, the same simulator behind a ``hil serve``
subprocess on TCP loopback (``--log-level warning``), and ``--device software``. Figures
are per-epoch times from ``metrics.jsonl`` (``epoch_s``: training and evaluation;
``train_s`` when the run records it); each ratio is computed within a round and the
minimum over rounds is reported (the least disturbed round on a shared machine):

- ``ratio_hil_vs_software`` = in-process ÷ software (target ≤ 1.4);
- ``ratio_tcp_vs_inprocess`` = TCP ÷ in-process (target ≤ 1.2);
- ``tcp_metrics_identical``: the TCP run's metrics equal the in-process run's;
- ``ratio_cpu_hil_vs_software_train``: in-process ÷ software in CPU seconds of the
  training part of the epoch (``train_cpu_s``, this process only; both runs are one process);
- ``ratio_cpu_*_vs_*`` (others): the same ratios in CPU seconds of the whole run (set-up, training and
  evaluation; for TCP the client's and the server's), which do not depend on how many other
  processes compete for the cores: on a loaded machine the TCP run's two processes get more
  wall-clock CPU share than one in-process run, so its wall-time ratio can drop below 1.

BLAS uses one thread in this process and in the server (environment, set before numpy).

Usage: ``python scripts/bench_hil.py [--repeats 3] [--epochs 1] [--out results/bench_hil.json]``
"""

# ruff: noqa: E402  (thread limits must be set before numpy is imported)
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from hil.logging import configure_logging
from hil.trainer.runs import RunDir, without_timing
from hil.trainer.session import TrainRequest, train
from scripts.bench_rpc import _Served

CONFIG = REPO / "configs" / "jsb_osttp_hil_tuned.yaml"
SIM = "sim://?preset=hermes&seed=0"


def _run(device: str, run_dir: Path, epochs: int, data: Path) -> list[dict[str, Any]]:
    shutil.rmtree(run_dir, ignore_errors=True)
    train(
        TrainRequest(
            config=CONFIG,
            device=device,
            seed=0,
            epochs=epochs,
            run_dir=run_dir,
            progress=False,
            overrides=(f"data.path={data}",),
        )
    )
    return RunDir.open(run_dir).metrics()


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _time(metrics: list[dict[str, Any]], key: str) -> float | None:
    vals = [m[key] for m in metrics if key in m]
    return float(np.mean(vals)) if vals else None


def run(repeats: int, epochs: int, data: Path) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_hil_"))
    rounds: list[dict[str, Any]] = []
    identical = True
    try:
        for r in range(repeats):
            cpu: dict[str, float] = {}
            c0 = time.process_time()
            local = _run(SIM, tmp / f"inprocess{r}", epochs, data)
            cpu["inprocess"] = time.process_time() - c0
            served = _Served(SIM, "tcp://127.0.0.1:*")
            with served as endpoint:
                s0, c0 = _proc_cpu_s(served.proc.pid), time.process_time()
                remote = _run(endpoint, tmp / f"tcp{r}", epochs, data)
                cpu["tcp"] = time.process_time() - c0 + _proc_cpu_s(served.proc.pid) - s0
            c0 = time.process_time()
            software = _run("software", tmp / f"software{r}", epochs, data)
            cpu["software"] = time.process_time() - c0
            identical &= without_timing(local) == without_timing(remote)
            rnd: dict[str, Any] = {}
            for key in ("epoch_s", "train_s", "eval_s", "train_cpu_s"):
                for name, m in (("inprocess", local), ("tcp", remote), ("software", software)):
                    v = _time(m, key)
                    if v is not None:
                        rnd[f"{key}_{name}"] = round(v, 3)
            for name, c in cpu.items():
                rnd[f"run_cpu_s_{name}"] = round(c, 2)
            rnd["ratio_cpu_hil_vs_software"] = round(cpu["inprocess"] / cpu["software"], 3)
            rnd["ratio_cpu_tcp_vs_inprocess"] = round(cpu["tcp"] / cpu["inprocess"], 3)
            rnd["ratio_hil_vs_software"] = round(
                rnd["epoch_s_inprocess"] / rnd["epoch_s_software"], 3
            )
            rnd["ratio_tcp_vs_inprocess"] = round(rnd["epoch_s_tcp"] / rnd["epoch_s_inprocess"], 3)
            if "train_cpu_s_inprocess" in rnd:  # this process's CPU: in-process vs software
                rnd["ratio_cpu_hil_vs_software_train"] = round(
                    rnd["train_cpu_s_inprocess"] / rnd["train_cpu_s_software"], 3
                )
            if "train_s_inprocess" in rnd:
                rnd["ratio_hil_vs_software_train"] = round(
                    rnd["train_s_inprocess"] / rnd["train_s_software"], 3
                )
                rnd["ratio_tcp_vs_inprocess_train"] = round(
                    rnd["train_s_tcp"] / rnd["train_s_inprocess"], 3
                )
            rounds.append(rnd)
            print(json.dumps(rnd), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {"config": str(CONFIG.relative_to(REPO)), "epochs": epochs}
    for key in rounds[0]:
        if key.startswith("ratio_"):
            out[key] = min(r[key] for r in rounds)
    out.update(
        tcp_metrics_identical=identical,
        rounds=rounds,
        repeats=repeats,
        targets={"ratio_hil_vs_software_max": 1.4, "ratio_tcp_vs_inprocess_max": 1.2},
        blas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
        machine=f"{platform.machine()} {platform.python_version()} numpy {np.__version__}",
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HIL_DATA_DIR", REPO.parent / "shared" / "data"))
        / "jsb_chorales.pickle",
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_hil.json")
    args = parser.parse_args()
    configure_logging("warning")
    result = run(args.repeats, args.epochs, args.data.resolve())
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
