"""Digital-twin benchmark: ``hil characterize`` of a full chip, and twin-vs-source validation.

For each simulator source (``hermes``, ``aihwkit-pcm``, and ``hermes`` with 10x its fault
rates from a preset file, so the fault fractions are measured on thousands of devices):

1. ``hil characterize 'sim://?preset=SRC&seed=3' --out results/twins/NAME.yaml`` on the
   whole of chip 0 (65,536 cells, 262,144 devices), timed as a subprocess (wall clock,
   including start-up and writing the report);
2. the same measurement procedure on fresh devices of the source (seed 1001) and of the
   twin (``sim://?preset=twin.yaml&seed=2002``), whole chip, and the largest relative
   difference of each validation statistic (:func:`hil.characterize.twin.compare`).

With ``--board`` also the board emulator (hermes with 10x faults, wall clock): chip 0,
region ``--board-region``, drift waited ``--board-drift-s``; fresh source = chip 1.

Prints JSON and writes ``results/characterize.json``.
Usage: ``python scripts/bench_characterize.py [--board] [--board-drift-s 300]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers import open_driver  # noqa: E402
from hil.characterize.measure import SIM_DRIFT_AGES_S, Plan, measure  # noqa: E402
from hil.characterize.twin import THRESHOLDS, compare, statistics  # noqa: E402
from hil.logging import configure_logging  # noqa: E402
from protocols.region import Region  # noqa: E402
from simulator import get_preset  # noqa: E402
from simulator.preset_file import write_preset_file  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def characterize(url: str, out: Path, extra: list[str]) -> float:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "hil", "--log-level", "warning", "characterize", url]
    subprocess.run([*cmd, "--out", str(out), "--no-progress", *extra], check=True, env=ENV)
    return time.perf_counter() - t


def fresh(url: str, plan: Plan) -> dict:
    with open_driver(url) as drv:
        return statistics(measure(drv, plan))


def verdict(diff: dict) -> dict:
    return {k: {"max_rel_diff": diff[k], "limit": THRESHOLDS[k]} for k in THRESHOLDS} | {
        "all_within": all(diff[k] <= THRESHOLDS[k] for k in THRESHOLDS)
    }


def sim_source(name: str, spec: str, outdir: Path) -> dict:
    twin = outdir / f"{name}.yaml"
    wall = characterize(f"sim://?preset={spec}&seed=3", twin, [])
    report = json.loads(twin.with_suffix(".json").read_text())
    plan = Plan(Region(0, 0, 256, 0, 256))
    src = fresh(f"sim://?preset={spec}&seed=1001", plan)
    tw = fresh(f"sim://?preset={twin}&seed=2002", plan)
    return {
        "command": f"hil characterize 'sim://?preset={spec}&seed=3' --out {twin.name}",
        "full_chip_wall_s": wall,
        "phase_s": report["timings_s"],
        "validation_full_chip": verdict(compare(src, tw)),
    }


def board_source(outdir: Path, region: str, drift_s: float, spec: Path) -> dict:
    cmd = [sys.executable, "-m", "hil", "--log-level", "warning", "board-emulator", "--tcp", "0"]
    proc = subprocess.Popen(
        [*cmd, "--clock", "wall", "--seed", "5", "--preset", str(spec)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        url = f"board://?port={proc.stdout.readline().strip()}"
        twin = outdir / "board-emulator.yaml"
        hours = drift_s / 3600
        extra = ["--region", region, "--reads", "8", "--drift-hours", str(hours)]
        wall = characterize(url, twin, extra)
        r0, r1, c0, c1 = (int(x) for x in region.replace(",", ":").split(":"))
        plan = Plan(Region(1, r0, r1, c0, c1), reads=8, drift_hours=hours)
        src = fresh(url, plan)
    finally:
        proc.terminate()
        proc.wait(30)
    tw = fresh(
        f"sim://?preset={twin}&seed=2002", Plan(plan.region, 8, drift_ages_s=SIM_DRIFT_AGES_S)
    )
    report = json.loads(twin.with_suffix(".json").read_text())
    return {
        "command": f"hil characterize '{url}' {' '.join(extra)} --out {twin.name}",
        "wall_s": wall,
        "phase_s": report["timings_s"],
        "validation_fresh_chip1": verdict(compare(src, tw)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "characterize.json")
    ap.add_argument("--board", action="store_true", help="also the board emulator")
    ap.add_argument("--board-region", default="0:64,0:256")
    ap.add_argument("--board-drift-s", type=float, default=300.0)
    args = ap.parse_args()
    configure_logging("warning", json=False)
    outdir = args.out.parent / "twins"
    outdir.mkdir(parents=True, exist_ok=True)
    h = get_preset("hermes")
    tenfold = {k: 10 * getattr(h, k) for k in ("p_stuck_reset", "p_stuck_gmax", "p_dead")}
    faulty = write_preset_file(h.replace(name="hermes-10x-faults", **tenfold), outdir / "src.yaml")
    results: dict = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, shared with other jobs",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for name, spec in (
        ("hermes", "hermes"),
        ("aihwkit-pcm", "aihwkit-pcm"),
        ("hermes-10x-faults", str(faulty)),
    ):
        results[name] = sim_source(name, spec, outdir)
        print(name, json.dumps(results[name]["validation_full_chip"]["all_within"]), flush=True)
    if args.board:
        results["board-emulator"] = board_source(
            outdir, args.board_region, args.board_drift_s, faulty
        )
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
