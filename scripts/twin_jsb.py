"""HIL JSB training on a digital twin against its source: test NLL within 0.1 (issue #16).

For each seed, ``configs/jsb_osttp_hil_tuned.yaml`` is trained for ``--epochs`` epochs (3)
hardware-in-the-loop on the source simulator ``sim://?preset=SRC&seed=S`` and on its twin
``sim://?preset=TWIN.yaml&seed=S`` with the same run seed S, and, as the noise floor, on the source with another device seed
(``seed=S+100``, same run seed: another chip of the same kind). The twin is the preset file
``hil characterize`` wrote for the source (``--twin``; by default it is characterised
first, whole chip 0, source seed 3, which no run below uses). Records the test NLL at the
best-validation epoch of each, the twin-minus-source difference per seed and of the means,
and the same for the other chip of the source (what a perfect twin could at best achieve).

Prints JSON and writes ``results/twin_jsb.json``.
Usage: ``python scripts/twin_jsb.py [--source hermes] [--seeds 0 1 2] [--epochs 3]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hil.logging import configure_logging  # noqa: E402
from hil.trainer.session import TrainRequest, train  # noqa: E402

CONFIG = REPO / "configs" / "jsb_osttp_hil_tuned.yaml"


def run(device: str, seed: int, epochs: int, run_dir: Path) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    summary = train(
        TrainRequest(
            config=CONFIG, device=device, seed=seed, epochs=epochs, run_dir=run_dir, progress=False
        )
    )
    return {k: summary[k] for k in ("test_nll_at_best", "test_nll", "pulses") if k in summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", default="hermes")
    ap.add_argument("--twin", type=Path, help="the source's twin (default: characterise it)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "twin_jsb.json")
    args = ap.parse_args()
    configure_logging("warning", json=False)
    work = Path(tempfile.mkdtemp(prefix="twin_jsb_"))
    twin = args.twin
    if twin is None:
        twin = work / "twin.yaml"
        url = f"sim://?preset={args.source}&seed=3"
        cmd = [sys.executable, "-m", "hil", "--log-level", "warning", "characterize", url]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([*cmd, "--out", str(twin), "--no-progress"], check=True, env=env)
    rows = []
    for seed in args.seeds:
        src = run(f"sim://?preset={args.source}&seed={seed}", seed, args.epochs, work / f"s{seed}")
        tw = run(f"sim://?preset={twin}&seed={seed}", seed, args.epochs, work / f"t{seed}")
        other = run(
            f"sim://?preset={args.source}&seed={seed + 100}", seed, args.epochs, work / f"o{seed}"
        )
        diff = tw["test_nll_at_best"] - src["test_nll_at_best"]
        floor = other["test_nll_at_best"] - src["test_nll_at_best"]
        rows.append(
            {
                "seed": seed,
                "source": src,
                "twin": tw,
                "source_other_chip": other,
                "test_nll_diff": diff,
                "other_chip_diff": floor,
            }
        )
        print(
            f"seed {seed}: source {src['test_nll_at_best']:.3f}, twin "
            f"{tw['test_nll_at_best']:.3f} ({diff:+.3f}), other source chip "
            f"{other['test_nll_at_best']:.3f} ({floor:+.3f})",
            flush=True,
        )
    out = {
        "benchmark": "twin_jsb",
        "config": str(CONFIG.relative_to(REPO)),
        "epochs": args.epochs,
        "source": f"sim://?preset={args.source}&seed=<seed>",
        "twin": f"sim://?preset={twin.name}&seed=<seed> (hil characterize of source seed 3)",
        "twin_preset": yaml.safe_load(twin.read_text()),
        "runs": rows,
        "max_abs_test_nll_diff": max(abs(r["test_nll_diff"]) for r in rows),
        "within_0.1": all(abs(r["test_nll_diff"]) <= 0.1 for r in rows),
        "mean_test_nll": {
            k: float(np.mean([r[k]["test_nll_at_best"] for r in rows]))
            for k in ("source", "twin", "source_other_chip")
        },
        "max_abs_other_chip_diff": max(abs(r["other_chip_diff"]) for r in rows),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, shared",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "twin_preset"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
