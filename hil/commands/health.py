"""``hil health URL [--json]``: quick scan of stuck and dead cells (and rows) of every chip.

Destructive for the scanned region (RESET, a few SET pulses, RESET): run it on chips that
hold nothing to keep, e.g. before a training run. Writes the report to
``--out`` (default ``runs/health``) as ``health-<time>.json`` and ``latest.json``; prints a
summary, or the report itself with ``--json``. See :mod:`hil.characterize.health`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from drivers import DriverError, open_driver
from hil.characterize.health import scan
from hil.commands.characterize import parse_region
from hil.errors import ConfigError, HilError
from hil.fsio import atomic_write_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "health",
        help="quick scan of stuck/dead cells and rows (destructive: leaves the region RESET)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="driver URL: sim://..., tcp://host:port, board://lab.yaml")
    p.add_argument(
        "--chip", type=int, action="append", help="chip to scan (repeatable; default all)"
    )
    p.add_argument("--region", help="R0:R1,C0:C1 half-open (default: the whole chip)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", type=Path, default=Path("runs/health"), help="report directory")
    p.add_argument(
        "--row-fraction",
        type=float,
        default=0.25,
        help="a row is bad when more than this fraction of its cells is (default 0.25)",
    )
    p.add_argument("--pulses", type=int, default=8, help="SET pulses per device (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.row_fraction <= 1:
        raise ConfigError(f"--row-fraction {args.row_fraction} must be in (0, 1]")
    if not 1 <= args.pulses <= 100:
        raise ConfigError(f"--pulses {args.pulses} must be in 1..100")
    try:
        drv = open_driver(args.url)
    except DriverError as exc:
        raise HilError(f"cannot open driver {args.url!r}: {exc}") from exc
    with drv:
        info = drv.info()
        chips = args.chip if args.chip else list(range(info.chips))
        bad = [c for c in chips if not 0 <= c < info.chips]
        if bad:
            raise ConfigError(f"--chip {bad[0]}: the device has chips 0..{info.chips - 1}")
        regions = [parse_region(args.region, c, info.rows, info.cols) for c in chips]
        try:
            report = scan(
                drv, args.url, regions, pulses=args.pulses, row_fraction=args.row_fraction
            )
        except DriverError as exc:
            raise HilError(f"health scan failed on {args.url}: {exc}") from exc
    text = report.model_dump_json(indent=1)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in (f"health-{stamp}.json", "latest.json"):
        atomic_write_bytes(args.out / name, (text + "\n").encode())
    if args.json:
        print(text)
        return 0
    for h in report.chips:
        fr = ", ".join(f"{k} {v:.3%}" for k, v in h.fractions.items())
        print(
            f"chip {h.chip} {h.region}: {len(h.bad_cells)} bad cells, "
            f"{len(h.bad_rows)} bad rows; devices {fr}"
        )
    print("wear ledger: not kept by this driver" if report.wear is None else f"wear: {report.wear}")
    print(
        f"scanned in {report.duration_s:.1f} s; wrote {args.out / 'latest.json'}", file=sys.stderr
    )
    return 0
