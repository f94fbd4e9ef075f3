"""``hil driver check URL``: run the driver conformance suite (drivers.conformance)."""

from __future__ import annotations

import argparse
import json

from drivers import DriverError
from drivers.conformance import DEFAULT_REGION, run_conformance
from hil.errors import ConfigError
from protocols import Region


def _region(text: str) -> Region:
    try:
        return Region(*(int(v) for v in text.split(",")))
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"region {text!r} must be CHIP,ROW0,ROW1,COL0,COL1 (half-open): {exc}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("driver", help="driver tools (conformance check)")
    sub = p.add_subparsers(dest="driver_command", metavar="ACTION", required=True)
    c = sub.add_parser(
        "check",
        help="check a driver against the contract; exit 1 if any requirement fails",
        description="Run every conformance requirement against URL (sim://..., "
        "tcp://host:port, ipc://path, board://setup.yaml, or a scheme of an installed "
        "driver plug-in, docs/writing-a-driver.md). It RESETs and writes the "
        "test region: keep it away from cells holding weights you need.",
    )
    c.add_argument("url")
    r = DEFAULT_REGION
    c.add_argument(
        "--region",
        type=_region,
        default=DEFAULT_REGION,
        help=f"test region CHIP,ROW0,ROW1,COL0,COL1 (default "
        f"{r.chip},{r.row0},{r.row1},{r.col0},{r.col1})",
    )
    c.add_argument(
        "--mvm-rel-tol",
        type=float,
        default=0.25,
        help="allowed relative MVM error on noisy devices (default 0.25)",
    )
    c.add_argument(
        "--budget",
        type=float,
        default=600.0,
        metavar="S",
        help="stop starting new requirements after S seconds (default 600); a failed "
        "connection or a device that stops answering ends the check at once",
    )
    c.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        report = run_conformance(
            args.url, region=args.region, mvm_rel_tol=args.mvm_rel_tol, budget_s=args.budget
        )
    except DriverError as exc:
        raise ConfigError(str(exc)) from exc
    if args.json:
        print(
            json.dumps(
                {
                    "target": report.target,
                    "passed": report.passed,
                    "outcomes": [o.__dict__ for o in report.outcomes],
                    "not_run": report.not_run,
                    "not_run_reason": report.not_run_reason,
                },
                indent=2,
            )
        )
    else:
        print(report.format())
    return 0 if report.passed else 1
