"""Reproduce the JSB results of Ortner et al. (AICAS 2023): a thin wrapper over ``hil sweep``.

Every figure is a ``hil sweep`` of a spec in ``configs/sweeps/`` (each trial an ordinary
``hil train`` run directory); this script only runs (or, when a sweep directory is already
there, resumes) those sweeps and collects their trials into one JSON file and a plot.
Spread over seeds is the sample standard deviation (ddof = 1).

- ``software``: ``configs/sweeps/jsb_software_<config>.yaml`` for each of ``--configs``
  (``paper``, ``tuned``, ``tuned_noH`` by default, or ``tuned_detach``; every rule BPTT, OSTL,
  DRTP, OSTTP unless ``--rules``, seeds 0 1 2), test
  NLL at the epoch of best validation NLL; ``configs/sweeps/jsb_software_timing.yaml`` (one
  trial at a time) for the training time of one epoch at batch 1 and 16 (``train_s``); the
  baselines of the task. The last of ``--configs`` is reported at the top level of ``rules``,
  the others as ``rules.<rule>.<config>_config``. Writes ``results/jsb_software.json``, ``.png``.
- ``hil``: ``configs/sweeps/jsb_hil.yaml`` (hardware-in-the-loop OSTTP on the in-process
  hermes simulator, tuned and paper configs, seeds 0 1 2, with the drift evaluation of
  ``hil runs eval``), then wall time per epoch in-process vs over ``hil serve`` on TCP
  loopback vs software, measured back to back. Writes ``results/jsb_hil.json`` and ``.png``.

Usage::

    python scripts/reproduce_paper.py software [--configs paper tuned tuned_noH]
    python scripts/reproduce_paper.py hil

The same sweeps by hand: ``hil sweep configs/sweeps/<spec>.yaml --sweep-dir DIR``; this
script then only collects them (``--sweeps-dir`` holding ``sweep-<name>/``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from hil.procs import ServeProcess  # noqa: E402
from hil.sweep.runner import run_sweep  # noqa: E402
from hil.sweep.spec import load_spec  # noqa: E402
from hil.trainer.runs import RunDir, mean_std  # noqa: E402
from hil.trainer.session import TrainRequest, load_task, resolve_request, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SWEEPS = CONFIGS / "sweeps"
RULE_NAMES = ("bptt", "ostl", "drtp", "osttp")
SOFTWARE_CONFIGS = ("paper", "tuned", "tuned_noH", "tuned_detach")
HIL_CONFIGS = {
    "tuned": CONFIGS / "jsb_osttp_hil_tuned.yaml",
    "paper": CONFIGS / "jsb_osttp_hil.yaml",
}
CURVE_KEYS = ("train_nll", "valid_nll", "test_nll", "pulses", "refreshes", "train_s", "epoch_s")


def machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} sandbox, Python {platform.python_version()}"


def sweep(name: str, sweeps_dir: Path, max_concurrent: int | None = None) -> list[dict[str, Any]]:
    """Run ``configs/sweeps/<name>.yaml`` (resuming its directory when there is one); every
    trial's row of ``sweep.json`` with its run's ``summary`` and per-epoch ``curve``."""
    spec, trials = load_spec(SWEEPS / f"{name}.yaml")
    sweep_dir = sweeps_dir / f"sweep-{spec.name}"
    resume = (sweep_dir / ".sweep" / "spec.json").is_file()
    summary = run_sweep(spec, trials, sweep_dir, resume=resume, max_concurrent=max_concurrent)
    rows = []
    for row in summary["trials"]:
        run = RunDir.open(sweep_dir / row["run_dir"])
        metrics = run.metrics()
        curve = {k: [m.get(k, 0) for m in metrics] for k in CURVE_KEYS}
        rows.append({**row, "summary": run.read_json("summary.json"), "curve": curve})
    return rows


def run(
    config: Path,
    run_dir: Path,
    seed: int,
    epochs: int | None,
    *sets: str,
    device: str | None = None,
) -> dict[str, Any]:
    """One ``hil train`` run from scratch (the epoch-time comparison); summary and curves."""
    shutil.rmtree(run_dir, ignore_errors=True)
    summary = train(
        TrainRequest(
            config=config,
            device=device,
            seed=seed,
            epochs=epochs,
            run_dir=run_dir,
            overrides=sets,
            progress=False,
        )
    )
    metrics = RunDir.open(run_dir).metrics()
    curve = {k: [m.get(k, 0) for m in metrics] for k in CURVE_KEYS}
    return {"seed": seed, "summary": summary, "curve": curve}


def _plot_software(results: list[dict[str, Any]], configs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 4), sharey=True)
    for ax, cfg in zip(np.atleast_1d(axes), configs, strict=True):
        for rule in RULE_NAMES:
            runs = [r for r in results if r["rule"] == rule and r["config"] == cfg]
            if not runs:
                continue
            n = min(len(r["curve"]["valid_nll"]) for r in runs)
            v = np.array([r["curve"]["valid_nll"][:n] for r in runs])
            ax.plot(np.arange(1, n + 1), v.mean(0), label=rule)
            ax.fill_between(np.arange(1, n + 1), v.min(0), v.max(0), alpha=0.2)
        ax.axhline(11.09, color="grey", ls="--", lw=1, label="constant predictor (11.09)")
        ax.axhline(9.06, color="grey", ls=":", lw=1, label="logistic regression (9.06)")
        ax.set_title(f"JSB, {cfg} configuration")
        ax.set_xlabel("epoch")
        ax.set_ylim(8.0, 13.0)
        ax.legend()
    np.atleast_1d(axes)[0].set_ylabel("validation NLL (mean, min-max over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _seed_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = [r["summary"]["test_nll_at_best"] for r in runs]
    mean, std = mean_std(best)
    return {
        "test_nll_mean": mean,
        "test_nll_std": std,
        "seeds": [r["seed"] for r in runs],
        "test_nll_per_seed": best,
        "best_epoch_per_seed": [r["summary"]["best_epoch"] for r in runs],
        "valid_nll_per_seed": [r["summary"]["best_valid_nll"] for r in runs],
        "epochs": max(len(r["curve"]["valid_nll"]) for r in runs),
    }


def run_software(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for cfg in args.configs:
        for row in sweep(f"jsb_software_{cfg}", args.sweeps_dir, args.max_concurrent):
            results.append({**row, "rule": row["params"]["rule"], "config": cfg})
    timed: dict[tuple[str, int], list[float]] = {}
    for row in (
        sweep("jsb_software_timing", args.sweeps_dir, max_concurrent=1) if args.timing else []
    ):
        key = (row["params"]["rule"], row["params"]["train.batch_size"])
        timed.setdefault(key, []).append(row["curve"]["train_s"][0])
    timing = {key: float(np.mean(v)) for key, v in timed.items()}  # mean over the seeds
    main_cfg = args.configs[-1]
    rules: dict[str, Any] = {}
    for rule in args.rules:

        def of(cfg: str, rule: str = rule) -> dict[str, Any]:
            picked = [r for r in results if r["rule"] == rule and r["config"] == cfg]
            spec = SWEEPS / f"jsb_software_{cfg}.yaml"
            return {**_seed_summary(picked), "sweep": str(spec.relative_to(REPO))}

        entry = of(main_cfg)
        if args.timing:
            entry["train_s_b1"], entry["train_s_b16"] = timing[(rule, 1)], timing[(rule, 16)]
        for cfg in args.configs[:-1]:
            entry[f"{cfg}_config"] = of(cfg)
        rules[rule] = entry
    cfg0 = resolve_request(TrainRequest(config=CONFIGS / "jsb_software" / f"{main_cfg}_osttp.yaml"))
    task = load_task(cfg0, progress=False)
    baselines = cfg0.task_spec.baselines
    out = {
        "benchmark": "jsb_software",
        "network": "88 -> 150 SNU (full reset, 1 - tanh^2; recurrent H except tuned_noH) -> 88 sigmoid",
        "metric": "test NLL (BCE summed over 88 keys, mean over predicted frames) at the best "
        "valid epoch (1-based); spread: sample std over seeds (ddof = 1)",
        "main_config": main_cfg,
        "rules": rules,
        "baselines": baselines(task) if baselines else {},
        "curves": [{k: r[k] for k in ("rule", "config", "seed", "curve")} for r in results],
        "machine": machine(),
        "load_average": os.getloadavg(),
        "data_source": task.source,
        "data_sha256": task.fingerprint,
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    _plot_software(results, list(args.configs), args.out.with_suffix(".png"))
    return out


def _epoch_time_ratios(epochs: int, runs: Path) -> dict[str, Any]:
    """Wall time per epoch of the tuned HIL run: in-process simulator, the same over a
    ``hil serve`` on TCP loopback, and software OSTTP, measured back to back."""
    cfg, sim = HIL_CONFIGS["tuned"], "sim://?preset=hermes&seed=0"
    runs.mkdir(parents=True, exist_ok=True)
    local = run(cfg, runs / "time_inprocess", 0, epochs, device=sim)
    with ServeProcess(sim, "tcp://127.0.0.1:*") as srv:
        remote = run(cfg, runs / "time_tcp", 0, epochs, device=srv.endpoint)
    software = run(cfg, runs / "time_software", 0, epochs, device="software")
    t = {
        k: float(np.mean(r["curve"]["epoch_s"]))
        for k, r in (("inprocess", local), ("tcp", remote), ("software", software))
    }
    return {
        "epoch_s_inprocess": t["inprocess"],
        "epoch_s_tcp": t["tcp"],
        "epoch_s_software": t["software"],
        "ratio_tcp_vs_inprocess": t["tcp"] / t["inprocess"],
        "ratio_hil_vs_software": t["inprocess"] / t["software"],
        "tcp_metrics_identical": local["curve"]["test_nll"] == remote["curve"]["test_nll"],
        "timing_epochs": epochs,
    }


def _plot_hil(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in (("tuned", "C0"), ("paper", "C1")):
        for i, curve in enumerate(results[name]["curves"]):
            epochs = np.arange(1, len(curve["test_nll"]) + 1)
            label = f"HIL OSTTP, {name} config" if i == 0 else None
            ax.plot(epochs, curve["test_nll"], color=color, alpha=0.7, label=label)
    ax.axhline(11.09, color="k", ls="--", lw=0.8, label="constant predictor 11.09")
    ax.axhline(11.0, color="r", ls=":", lw=0.8, label="paper's hardware 11.0")
    ax.set_xlabel("epoch")
    ax.set_ylabel("JSB test NLL")
    ax.set_ylim(9, 15)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_hil(args: argparse.Namespace) -> dict[str, Any]:
    """HIL OSTTP on the hermes simulator, per seed, for the tuned and the paper config, with
    the drift evaluation of every trained chip (the ``evaluate.drift`` of the spec)."""
    from hil.logging import configure_logging

    configure_logging("warning", json=False)
    rows = sweep("jsb_hil", args.sweeps_dir, args.max_concurrent)
    spec, _ = load_spec(SWEEPS / "jsb_hil.yaml")
    out: dict[str, Any] = {
        "benchmark": "jsb_hil",
        "sweep": str((SWEEPS / "jsb_hil.yaml").relative_to(REPO)),
        "network": "88 -> 150 SNU (full reset, no H) -> 88 sigmoid; W1, W2 on chip 1, B on chip 2",
        "device": "sim://?preset=hermes&seed=<seed> (in-process simulator, HERMES-like PCM)",
        "metric": "test NLL at the epoch of best valid NLL (and at the last epoch); spread: "
        "sample std over seeds (ddof = 1)",
        "seeds": spec.seeds,
    }
    for name, cfg in HIL_CONFIGS.items():
        results = [r for r in rows if r["params"]["config"] == name]
        best = [r["summary"]["test_nll_at_best"] for r in results]
        final = [r["summary"]["test_nll"] for r in results]
        (mean, std), (final_mean, final_std) = mean_std(best), mean_std(final)
        drift = [r["drift"] for r in results]
        out[name] = {
            "config": str(cfg.relative_to(REPO)),
            "epochs": spec.epochs,
            "test_nll_mean": mean,
            "test_nll_std": std,
            "test_nll_final_mean": final_mean,
            "test_nll_final_std": final_std,
            "per_seed_test_nll": best,
            "pulses_mean": float(np.mean([r["summary"]["pulses"] for r in results])),
            "curves": [r["curve"] for r in results],
            "drift": {
                "delays_s": drift[0]["delays_s"],
                **{
                    mode: [float(np.mean([d[mode][i] for d in drift])) for i in range(len(v))]
                    for mode, v in drift[0].items()
                    if mode != "delays_s"
                },
            },
        }
    for k in ("test_nll_mean", "test_nll_std", "drift"):  # headline: the tuned configuration
        out[k] = out["tuned"][k]
    out.update(_epoch_time_ratios(args.timing_epochs, args.sweeps_dir / "timing_hil"))
    out["machine"] = machine()
    out["load_average"] = os.getloadavg()
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    _plot_hil(out, args.out.with_suffix(".png"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--sweeps-dir",
        type=Path,
        default=REPO / "runs" / "reproduce",
        help="where the sweeps live (sweep-<name>/ each; an existing one is resumed)",
    )
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: Ray's CPUs)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("software", help="every rule in software (results/jsb_software.json)")
    p.add_argument(
        "--configs", nargs="+", default=["paper", "tuned", "tuned_noH"], choices=SOFTWARE_CONFIGS
    )
    p.add_argument("--rules", nargs="+", default=list(RULE_NAMES), choices=RULE_NAMES)
    p.add_argument(
        "--timing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the epoch-time sweep (configs/sweeps/jsb_software_timing.yaml)",
    )
    p.add_argument("--out", type=Path, default=REPO / "results" / "jsb_software.json")
    p.set_defaults(part=run_software)
    h = sub.add_parser("hil", help="hardware-in-the-loop OSTTP on the simulated chips")
    h.add_argument("--timing-epochs", type=int, default=2)
    h.add_argument("--out", type=Path, default=REPO / "results" / "jsb_hil.json")
    h.set_defaults(part=run_hil)
    args = parser.parse_args(argv)
    out = args.part(args)
    print(json.dumps({k: v for k, v in out.items() if k != "curves"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
