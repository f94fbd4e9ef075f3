"""``hil runs list [DIR]``, ``hil runs show RUN``, ``hil runs eval RUN`` and
``hil runs export RUN… --to mlflow``: summaries, drift evaluation and export of runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hil.fsio import dumps
from hil.trainer.runs import RunDir, list_runs
from hil.trainer.status import run_status


def run_row(run: RunDir) -> dict[str, Any]:
    """One run as ``hil runs list`` shows it: status (:mod:`hil.trainer.status`), rule,
    epochs done, data source, and the best-valid epoch with its valid and test metric."""
    cfg = run.read_json("config.json")
    metrics = run.metrics()
    data = run.read_json("data.json") if (run.path / "data.json").is_file() else {}
    row: dict[str, Any] = {
        "run": str(run.path),
        "status": run_status(run.path).status.value,
        "rule": cfg["rule"]["name"],
        "epochs": len(metrics),
        "device": cfg["device"]["url"],
        "data_source": data.get("source"),
        "metric": None,
        "best_epoch": None,
        "best_valid": None,
        "test_at_best": None,
    }
    m = next(
        (k[len("valid_") :] for k in (metrics[0] if metrics else {}) if k.startswith("valid_")),
        None,
    )
    if m is not None:
        sign = 1.0 if m == "accuracy" else -1.0  # accuracy: higher is better; NLL: lower
        best = max(metrics, key=lambda r: sign * r[f"valid_{m}"])
        row.update(
            metric=m,
            best_epoch=best["epoch"],
            best_valid=best[f"valid_{m}"],
            test_at_best=best.get(f"test_{m}"),
        )
    return row


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _list(args: argparse.Namespace) -> int:
    rows = [run_row(run) for run in list_runs(args.dir)]
    if args.json:
        print(dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {args.dir}")
        return 0
    print(
        f"{'run':40} {'status':8} {'rule':7} {'epochs':>6} {'metric':>8} {'best ep':>7} "
        f"{'valid':>7} {'test':>7}  device | data"
    )
    for r in rows:
        print(
            f"{Path(r['run']).name:40} {r['status']:8} {r['rule']:7} {r['epochs']:>6} "
            f"{r['metric'] or '-':>8} {r['best_epoch'] or '-':>7} {_fmt(r['best_valid']):>7} "
            f"{_fmt(r['test_at_best']):>7}  {r['device']} | {r['data_source'] or '-'}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run)
    summary = run.summary()
    status = run_status(run.path)
    print(f"run {run.path}")
    why = "" if status.reason == status.status.value else f" ({status.reason})"
    print(f"status: {status.status.value}{why}")
    print("summary: " + (dumps(summary, indent=2) if summary else "(not finished)"))
    for rec in run.metrics():
        m = "nll" if "test_nll" in rec else "accuracy"
        extra = f" pulses {rec['pulses']}" if "pulses" in rec else ""
        print(
            f"  epoch {rec['epoch']:>3}: {m} train {rec[f'train_{m}']:.3f} "
            f"valid {rec[f'valid_{m}']:.3f} test {rec[f'test_{m}']:.3f}{extra}"
        )
    if run.report_file.exists():
        print(f"report: {run.report_file}")
    return 0


UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365.25 * 86400.0}


def duration_s(text: str) -> float:
    """``3600``, ``90s``, ``15m``, ``1h``, ``2d``, ``1y`` -> seconds."""
    unit = text[-1:].lower()
    try:
        return float(text[:-1]) * UNITS_S[unit] if unit in UNITS_S else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 3600, 90s, 15m, 1h, 2d, 1y)"
        ) from None


def _eval(args: argparse.Namespace) -> int:
    from hil.trainer.evaluate import drift_evaluation

    out = drift_evaluation(args.run, args.at, args.compensation, wait=not args.no_wait)
    m = out["metric"]
    print(
        f"run {out['run']} after epoch {out['epoch']}: test {m} after the delay, per drift "
        f"compensation"
    )
    print(f"{'delay':>12} " + " ".join(f"{mode:>11}" for mode in out["modes"]))
    for i, delay in enumerate(out["delays_s"]):
        row = " ".join(f"{rows[i][f'test_{m}']:>11.4f}" for rows in out["modes"].values())
        print(f"{delay:>11.0f}s {row}")
    print(f"written to {args.run / 'drift_eval.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from hil.trainer.mlflow_export import export_runs

    done = export_runs(args.runs, args.tracking_uri, args.experiment, replace=args.replace)
    for item in done:
        what = "already exported as" if item.skipped else "exported as"
        print(f"{item.run}: {what} MLflow run {item.mlflow_run_id}")
    if any(item.skipped for item in done):
        print("(pass --replace to export those again)")
    print(f"store: {args.tracking_uri}, experiment {args.experiment!r}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list and show training runs")
    rs = p.add_subparsers(dest="runs_command", metavar="{list,show,eval,export}", required=True)
    pl = rs.add_parser("list", help="one line per run")
    pl.add_argument("dir", nargs="?", type=Path, default=Path("runs"))
    pl.add_argument("--json", action="store_true", help="one JSON object per run, for machines")
    pl.set_defaults(func=_list)
    ps = rs.add_parser("show", help="summary and per-epoch metrics of a run")
    ps.add_argument("run", type=Path)
    ps.set_defaults(func=_show)
    pe = rs.add_parser(
        "eval",
        help="drift evaluation: the run's trained chips scored again after delays",
        description="Restore the chips of a simulator run as they were at its last checkpoint, "
        "let each delay pass on the device clock and score valid/test, without and with "
        "drift compensation (writes RUN/drift_eval.json).",
    )
    pe.add_argument("run", type=Path)
    pe.add_argument(
        "--no-wait",
        action="store_true",
        help="when the chips are held by other runs, refuse at once instead of waiting",
    )
    pe.add_argument(
        "--at",
        nargs="+",
        type=duration_s,
        default=[0.0, 3600.0, 86400.0, 2592000.0],
        metavar="DELAY",
        help="delays after training (default: 0 1h 1d 30d)",
    )
    pe.add_argument(
        "--compensation",
        nargs="+",
        default=["none", "global", "per_column"],
        choices=["none", "global", "per_column"],
    )
    pe.set_defaults(func=_eval)
    px = rs.add_parser(
        "export",
        help="export runs to an MLflow tracking store (extra 'mlflow')",
        description="Log each run's config (params), per-epoch metrics and files (artifacts) "
        "as one MLflow run. The default store is offline: a SQLite file in the current "
        "directory, artifacts beside it.",
    )
    px.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    px.add_argument("--to", required=True, choices=["mlflow"], help="export target")
    px.add_argument(
        "--tracking-uri",
        default="sqlite:///mlflow.db",
        metavar="URI",
        help="MLflow tracking URI (default sqlite:///mlflow.db; also http://host:port)",
    )
    px.add_argument("--experiment", default="pcm-hil", help="experiment name (default pcm-hil)")
    px.add_argument("--replace", action="store_true", help="re-export runs exported before")
    px.set_defaults(func=_export)
