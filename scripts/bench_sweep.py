"""Benchmark ``hil sweep``: a 4-trial sim sweep against the same 4 runs one after another.

In one script, on this machine: (1) Ray's start-up time (import, ``ray.init`` of a local
2-CPU Ray without dashboard, shutdown), in a fresh process; (2) the four trials of a sweep
spec (2 learning rates × 2 seeds of hardware-in-the-loop OSTTP on the in-process hermes
simulator) run as ``hil train`` processes one after another; (3) the same spec as
``hil sweep`` on local Ray. Target: sweep wall time ≤ 0.65 × sequential (2 cores). The
runs of (2) and (3) must give identical metrics (timing fields aside). Writes
``results/bench_sweep.json``.

    python scripts/bench_sweep.py [--epochs 8] [--max-train 229] [--out results/bench_sweep.json]
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hil.sweep.spec import load_spec  # noqa: E402
from hil.trainer.runs import RunDir, without_timing  # noqa: E402

RAY_STARTUP = """
import json, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
t2 = time.perf_counter()
ray.shutdown()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": t3 - t2}))
"""


def _env(ray_tmp: str) -> dict[str, str]:
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-train", type=int, default=229, help="training sequences per epoch")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench_sweep.json")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    ray_tmp = tempfile.mkdtemp(prefix="hilray", dir="/tmp")
    env = _env(ray_tmp)
    spec_path = work / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "base": str(REPO / "configs" / "jsb_osttp_hil_tuned.yaml"),
                "epochs": args.epochs,
                "set": {"train.max_train_sequences": args.max_train},
                "grid": {"optim.lr": [1.0e-2, 2.0e-2]},
                "seeds": [0, 1],
                "devices": [{"url": "sim://?preset=hermes&seed={seed}"}],
            }
        )
    )
    spec, trials = load_spec(spec_path)
    load_before = os.getloadavg()

    startup = json.loads(
        subprocess.run(
            [sys.executable, "-c", RAY_STARTUP],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout.strip()
    )

    hil = [sys.executable, "-m", "hil", "--log-level", "warning"]
    seq_env = {**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    for t in trials:
        cmd = [*hil, "train", str(spec.base), "--run-dir", str(work / "seq" / t.id)]
        cmd += ["--seed", str(t.seed), "--device", t.device, "--epochs", str(args.epochs)]
        for item in t.overrides:
            cmd += ["--set", item]
        subprocess.run([*cmd, "--no-progress"], env=seq_env, check=True, capture_output=True)
    sequential_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = subprocess.run(
        [*hil, "sweep", str(spec_path), "--sweep-dir", str(work / "sweep"), "--num-cpus", "2"]
        + ["--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    sweep_s = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"hil sweep failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    identical = all(
        without_timing(RunDir(work / "seq" / t.id).metrics())
        == without_timing(RunDir(work / "sweep" / t.id).metrics())
        for t in trials
    )
    run_s = [RunDir(work / "seq" / t.id).summary()["wall_s"] for t in trials]  # type: ignore[index]
    result = {
        "benchmark": "hil sweep: 4 sim trials on local Ray vs the same runs one after another",
        "trials": [t.id for t in trials],
        "config": f"configs/jsb_osttp_hil_tuned.yaml, {args.epochs} epochs, "
        f"{args.max_train} training sequences, sim://?preset=hermes&seed=<seed>",
        "sequential_s": sequential_s,
        "sweep_s": sweep_s,
        "ratio_sweep_vs_sequential": sweep_s / sequential_s,
        "target_ratio": 0.65,
        "meets_target": sweep_s / sequential_s <= 0.65,
        "sequential_run_wall_s": run_s,
        "metrics_identical": identical,
        "ray_startup": startup,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": f"{os.cpu_count()}-core {platform.machine()} sandbox, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
