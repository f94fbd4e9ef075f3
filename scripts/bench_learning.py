"""Benchmark software learning: epoch time of OSTTP against BPTT and against its compute floor.

One training epoch of the JSB ``tuned`` configuration (88 → 150 SNU with H → 88 sigmoid,
:func:`make_net`) at batch 16 on the standard training split, the same batches
(fixed shuffle) for every rule. Rules are interleaved round by round on fresh networks and
each figure is the minimum over ``--repeats`` rounds (the machine is shared; the minimum is
the least disturbed run). BLAS runs on one thread (set before numpy is imported).

Figures:

- ``epoch_s_bptt_b16``, ``epoch_s_osttp_b16`` and ``ratio_osttp_vs_bptt`` (target ≤ 1.2);
- ``epoch_s_osttp_traces_b16``: OSTTP with the forward trace form (``form="traces"``), the
  pre-#17 algorithm, for the speed-up of the reverse recursion;
- ``gemm_gflops``: float32 GEMM rate of this process (1024³, best of 5);
- ``osttp_gemm_flops``: the epoch's matrix-product FLOPs over the padded (T, B) frames:
  per frame ``2·(mn + n² + nk)`` forward (W, H, readout), ``2·kn`` for the learning signal
  ``y*·B``, ``2·(mn + n² + nk)`` for ∇W, ∇H, ∇W_o; elementwise work is not counted;
- ``osttp_floor_s = osttp_gemm_flops / gemm_gflops`` and ``ratio_osttp_vs_floor`` (target ≤ 8).

Usage: ``python scripts/bench_learning.py [--repeats 3] [--data PATH] [--out results/bench_learning.json]``
"""

# ruff: noqa: E402  (thread limits must be set before numpy is imported)
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hil.learning import (
    Network,
    OptimConfig,
    Optimizer,
    ReadoutConfig,
    RuleConfig,
    SNUConfig,
    build_network,
    sequence_grads,
    train_epoch,
)
from hil.logging import configure_logging
from hil.tasks.baselines import ConstantPredictor
from hil.tasks.jsb import iter_batches, load_jsb_pickle

BATCH = 16
DECAY = {"bptt": 0.4, "osttp": 0.6}
"""the paper's decay per rule (learning-rules.md §4)"""


def make_net(rule: str, data) -> tuple[Network, Optimizer, RuleConfig]:  # type: ignore[no-untyped-def]
    """The JSB ``tuned`` software configuration: 88 → 150 SNU (full reset, with H) → 88
    sigmoid, Adam lr 1e-3 (×0.6 every 10 epochs, clip 5), frame-mean loss, readout bias at
    the keys' log-odds; seed 0."""
    rng = np.random.default_rng(0)
    layer = SNUConfig(88, 150, reset="full", recurrent=True, decay=DECAY[rule])
    net = build_network([layer], ReadoutConfig(150, 88), rng)
    p = ConstantPredictor.fit(data).p
    net.readout.c.update((np.log(p) - np.log1p(-p)).astype(np.float32))  # type: ignore[union-attr]
    opt = Optimizer(net.parameters(), OptimConfig("adam", lr=1e-3, decay_every=10, clip_norm=5.0))
    return net, opt, RuleConfig(rule, reduction="frame_mean")


def gemm_gflops(n: int = 1024, reps: int = 5) -> float:
    """Best float32 GEMM rate (GFLOP/s) of ``(n, n) @ (n, n)`` in this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2.0 * n**3 / best / 1e9


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def osttp_flops(net: Network, frames: int) -> float:
    """Matrix-product FLOPs of one OSTTP epoch over ``frames`` padded frames (module doc)."""
    per = 0
    for layer in net.hidden:
        m, n = layer.cfg.n_in, layer.cfg.n_out
        k = net.feedback[0].shape[0]
        h = n * n if layer.H is not None else 0
        per += 2 * (m * n + h) * 2 + 2 * k * n
    n_top, k = net.readout.cfg.n_in, net.readout.cfg.n_out
    per += 2 * n_top * k * 2
    return float(per) * frames


def run(repeats: int, data_path: Path) -> dict[str, object]:
    data = load_jsb_pickle(data_path)
    batches = list(iter_batches(data.train, BATCH, np.random.default_rng(0)))
    frames = sum(x.shape[0] * x.shape[1] for x, _, _ in batches)

    def epoch(rule: str, form: str = "reverse") -> float:
        net, opt, rc = make_net(rule, data)
        t = time.perf_counter()
        if form == "reverse":
            train_epoch(net, rc, opt, iter(batches))
        else:
            for x, target, mask in batches:
                res, _ = sequence_grads(net, rc, x, target, mask, form="traces")  # type: ignore[arg-type]
                opt.step(res.grads)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"bptt": [], "osttp": [], "osttp_traces": [], "gemm": []}
    for _ in range(repeats):
        times["bptt"].append(epoch("bptt"))
        times["osttp"].append(epoch("osttp"))
        times["osttp_traces"].append(epoch("osttp", "traces"))
        times["gemm"].append(gemm_gflops())
    bptt, osttp, traces = (min(times[k]) for k in ("bptt", "osttp", "osttp_traces"))
    rate = max(times["gemm"])
    net, _, _ = make_net("osttp", data)
    flops = osttp_flops(net, frames)
    floor = flops / (rate * 1e9)
    return {
        "batch": BATCH,
        "padded_frames": frames,
        "epoch_s_bptt_b16": round(bptt, 4),
        "epoch_s_osttp_b16": round(osttp, 4),
        "epoch_s_osttp_traces_b16": round(traces, 4),
        "ratio_osttp_vs_bptt": round(osttp / bptt, 3),
        "speedup_reverse_vs_traces": round(traces / osttp, 2),
        "gemm_gflops": round(rate, 2),
        "osttp_gemm_flops": flops,
        "osttp_floor_s": round(floor, 4),
        "ratio_osttp_vs_floor": round(osttp / floor, 2),
        "repeats": repeats,
        "all_epoch_s": {k: [round(v, 4) for v in vs] for k, vs in times.items()},
        "targets": {"ratio_osttp_vs_bptt_max": 1.2, "ratio_osttp_vs_floor_max": 8.0},
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "machine": f"{platform.machine()} {platform.python_version()} numpy {np.__version__}",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HIL_DATA_DIR", REPO.parent / "shared" / "data"))
        / "jsb_chorales.pickle",
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_learning.json")
    args = parser.parse_args()
    configure_logging("warning")
    result = run(args.repeats, args.data)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
