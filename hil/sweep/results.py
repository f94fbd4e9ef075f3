"""What a sweep found, read back from its trials' run directories.

Per trial: the spec's metric at the epoch of best validation (``best_record``), the epoch,
attempts (start/resume events), the run interval and, if asked, the drift evaluation. Per
point (same parameters, over seeds): ``mean`` and the sample standard deviation

    s = sqrt( Σ (x_i − x̄)² / (n − 1) )        (ddof = 1; ``null`` for n < 2)

over the finished trials. The best point has the lowest mean (NLL) or highest (accuracy).
Written live and at the end as ``sweep.json`` and ``sweep.png``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hil.fsio import atomic_write_json
from hil.sweep.spec import SweepSpec, Trial
from hil.sweep.trial import best_record, read_records, state_dir

STATUSES = ("running", "waiting for a chip", "queued", "done", "failed", "stopped early")


def mark(sweep_dir: Path, kind: str, trial_id: str, text: str = "") -> None:
    """Record a trial outcome the run directory cannot show (``failed``, ``stopped``)."""
    d = state_dir(sweep_dir) / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / trial_id).write_text(text)


def _marker(sweep_dir: Path, kind: str, trial_id: str) -> str | None:
    f = state_dir(sweep_dir) / kind / trial_id
    return f.read_text() if f.is_file() else None


def _jsonl(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "events.jsonl"
    out = []
    if f.is_file():
        for line in f.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def trial_row(spec: SweepSpec, sweep_dir: Path, t: Trial, live: str | None) -> dict[str, Any]:
    run_dir = Path(sweep_dir) / t.id
    kind = spec.metric_kind
    records = read_records(run_dir)
    events = _jsonl(run_dir)
    finished = (run_dir / "summary.json").is_file() and (
        spec.evaluate.drift is None or (run_dir / "drift_eval.json").is_file()
    )
    failed = _marker(sweep_dir, "failed", t.id)
    if finished:
        status = "done"
    elif _marker(sweep_dir, "stopped", t.id) is not None:
        status = "stopped early"
    elif live is not None:
        status = live
    elif failed is not None:
        status = "failed"
    else:
        status = "queued"
    best = best_record(records, kind)
    starts = [e["time"] for e in events if e.get("event") in ("start", "resume")]
    ends = [e["time"] for e in events if e.get("event") == "finished"]
    row: dict[str, Any] = {
        "id": t.id,
        "label": t.label,
        "params": t.params,
        "seed": t.seed,
        "device": t.device,
        "status": status,
        "epochs": len(records),
        "best_epoch": best["epoch"] if best else None,
        spec.metric: best[spec.metric] if best else None,
        f"valid_{kind}": best[f"valid_{kind}"] if best else None,
        "pulses": sum(r.get("pulses", 0) for r in records),
        "attempts": len(starts),
        "started": min(starts) if starts else None,
        "finished": max(ends) if ends else None,
        "run_dir": t.id,
    }
    if failed is not None and status == "failed":
        row["error"] = failed
    drift = run_dir / "drift_eval.json"
    if drift.is_file():
        d = json.loads(drift.read_text())
        row["drift"] = {
            "delays_s": d["delays_s"],
            **{m: [r[f"test_{kind}"] for r in rows] for m, rows in d["modes"].items()},
        }
    return row


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(
    spec: SweepSpec, trials: list[Trial], sweep_dir: Path, live: dict[str, str] | None = None
) -> dict[str, Any]:
    """The sweep's summary (``sweep.json``); ``live``: Tune's state of unfinished trials."""
    live = live or {}
    rows = [trial_row(spec, sweep_dir, t, live.get(t.id)) for t in trials]
    points: dict[str, dict[str, Any]] = {}
    for row in rows:
        p = points.setdefault(
            row["label"], {"label": row["label"], "params": row["params"], "trials": 0}
        )
        p["trials"] += 1
        if row["status"] == "done":
            p.setdefault("seeds", []).append(row["seed"])
            p.setdefault("values", []).append(row[spec.metric])
            if "drift" in row:
                p.setdefault("_drift", []).append(row["drift"])
    sign = 1.0 if spec.mode == "min" else -1.0
    for p in points.values():
        p["params"] = {k: v for k, v in p["params"].items() if k != "device"} | (
            {"device": p["params"]["device"]} if "device" in p["params"] else {}
        )
        p.setdefault("values", [])
        p.setdefault("seeds", [])
        p["n"] = len(p["values"])
        p["mean"], p["std"] = _stats(p["values"])
        drifts = p.pop("_drift", [])
        if drifts:
            modes = [k for k in drifts[0] if k != "delays_s"]
            p["drift"] = {"delays_s": drifts[0]["delays_s"]} | {
                m: [sum(d[m][i] for d in drifts) / len(drifts) for i in range(len(d0))]
                for m in modes
                for d0 in [drifts[0][m]]
            }
    ranked = [p for p in points.values() if p["mean"] is not None]
    best_point = min(ranked, key=lambda p: sign * p["mean"]) if ranked else None
    scored = [r for r in rows if r[spec.metric] is not None]
    best_trial = min(scored, key=lambda r: sign * r[spec.metric]) if scored else None
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    return {
        "sweep": spec.name,
        "metric": spec.metric,
        "mode": spec.mode,
        "metric_definition": f"{spec.metric} at the epoch of best valid_{spec.metric_kind}; "
        "per point: mean and sample std (ddof=1) over the finished seeds",
        "base": str(spec.base),
        "epochs": spec.epochs,
        "counts": counts,
        "best_point": best_point["label"] if best_point else None,
        "best": {k: best_point[k] for k in ("label", "params", "n", "mean", "std")}
        if best_point
        else None,
        "best_trial": {k: best_trial[k] for k in ("id", "label", spec.metric)}
        if best_trial
        else None,
        "points": list(points.values()),
        "trials": rows,
        "updated": time.time(),
    }


def write(summary: dict[str, Any], sweep_dir: Path, plot: bool = True) -> None:
    atomic_write_json(Path(sweep_dir) / "sweep.json", summary)
    if plot:
        plot_summary(summary, Path(sweep_dir) / "sweep.png")


def plot_summary(summary: dict[str, Any], path: Path) -> None:
    """Mean ± sample std per point with the per-seed values; drift curves if evaluated."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    pts = summary["points"]
    drift = [p for p in pts if "drift" in p]
    ncols = 2 if drift else 1
    fig, axes = plt.subplots(
        1, ncols, figsize=(max(6.0, 0.9 * len(pts) + 3) + 5 * (ncols - 1), 4.5)
    )
    ax = axes[0] if drift else axes
    for i, p in enumerate(pts):
        best = p["label"] == summary["best_point"]
        color = "C3" if best else "C0"
        if p["mean"] is not None:
            ax.errorbar(i, p["mean"], yerr=p["std"] or 0.0, fmt="o", color=color, capsize=4)
        ax.scatter([i] * len(p["values"]), p["values"], s=10, color="grey", zorder=3)
    ax.set_xticks(range(len(pts)))
    ax.set_xticklabels([p["label"] for p in pts], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"{summary['metric']} at best-valid epoch (mean ± s)")
    ax.set_title(f"sweep {summary['sweep']} (best in red)")
    ax.grid(alpha=0.3)
    if drift:
        ax2 = axes[1]
        for j, p in enumerate(drift):
            delays = [max(d, 1.0) for d in p["drift"]["delays_s"]]
            for k, (mode, ls) in enumerate(
                zip(("none", "global", "per_column"), "-:-", strict=True)
            ):
                if mode in p["drift"]:
                    ax2.plot(
                        delays,
                        p["drift"][mode],
                        ls,
                        marker="o",
                        color=f"C{j}",
                        alpha=1.0 - 0.25 * k,
                        label=f"{p['label']}, {mode}",
                    )
        ax2.set_xscale("log")
        ax2.set_xlabel("time after training (s; 0 shown at 1 s)")
        ax2.set_ylabel(f"test {summary['metric'].split('_', 1)[1]} (mean over seeds)")
        ax2.set_title("drift of the trained chips")
        ax2.legend(fontsize=6)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
