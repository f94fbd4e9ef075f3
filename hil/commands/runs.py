"""``hil runs list [DIR]``, ``hil runs show RUN``, ``hil runs eval RUN`` and
``hil runs export RUN… --to mlflow``: summaries, drift evaluation and export of runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.fsio import dumps
from hil.trainer.runs import RunDir, list_runs


def _list(args: argparse.Namespace) -> int:
    runs = list_runs(args.dir)
    if not runs:
        print(f"no runs in {args.dir}")
        return 0
    print(f"{'run':40} {'rule':7} {'epochs':>6} {'test':>15} {'best ep':>7}  device")
    for run in runs:
        s = run.summary()
        cfg = run.read_json("config.json")
        if s is None:
            done = len(run.metrics())
            print(
                f"{run.path.name:40} {cfg['rule']['name']:7} {done:>6} {'(running or stopped)':>18}"
                f"  {cfg['device']['url']}"
            )
        else:
            m = s["metric"]
            print(
                f"{run.path.name:40} {s['rule']:7} {s['epochs']:>6} {m:>8} {s[f'test_{m}']:>6.3f} "
                f"{s['best_epoch']:>7}  {s['device']}"
            )
    return 0


def _show(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run)
    summary = run.summary()
    print(f"run {run.path}")
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

    out = drift_evaluation(args.run, args.at, args.compensation)
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
