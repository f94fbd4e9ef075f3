"""``hil health URL [--json]``: stuck and dead cells, rows and columns of every chip, and
the device's wear ledger.

The scan is destructive for the scanned region (RESET, a few SET pulses, RESET): run it on
chips that hold nothing to keep, e.g. before a training run. The device keeps the report
(a ``hil serve`` in its state database, persisted with ``--state-dir``; an in-process
``sim://`` while it is open, or in its ``state_dir``), merged with what its previous report
said of chips and regions not scanned now, and every training run on that device places
its matrices away from the bad rows, columns and cells (config ``device.health``). The
report is also written to ``--out`` (default ``runs/health``) as ``health-<time>.json``
and ``latest.json``, which ``device.health=PATH`` can name.

The wear ledger (SET pulses and RESETs per device, kept by the device) is summarised per
chip: totals, the most-worn devices and ``--tile``-sized tiles; it is read after the scan,
so it includes the scan's own pulses. ``--wear-only`` reads it without scanning (nothing
is written to the chips, and the kept report is left as it is).
See :mod:`hil.characterize.health`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog
from pydantic import ValidationError

from drivers import DriverError, open_driver
from drivers.base import Driver
from hil.characterize.health import HealthReport, merge, read_wear, scan
from hil.commands.characterize import parse_region
from hil.errors import ConfigError, HilError
from hil.fsio import atomic_write_bytes

log = structlog.get_logger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "health",
        help="scan stuck/dead cells, rows and columns (destructive: leaves the region RESET) "
        "and show the wear ledger; the device keeps the report for placement",
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
        help="a row (column) is bad when more than this fraction of its cells is (default 0.25)",
    )
    p.add_argument("--pulses", type=int, default=8, help="SET pulses per device (default 8)")
    p.add_argument(
        "--wear-only", action="store_true", help="only read the wear ledger (no scan, no writes)"
    )
    p.add_argument(
        "--no-keep",
        action="store_true",
        help="do not make this report the device's latest (placement keeps using the old one)",
    )
    p.add_argument("--top", type=int, default=10, help="most-worn devices/tiles (default 10)")
    p.add_argument("--tile", type=int, default=32, help="wear tile size in cells (default 32)")
    p.set_defaults(func=run)


def kept_report(drv: Driver) -> HealthReport | None:
    """The device's kept report, None if it has none (or one this version cannot read)."""
    raw = drv.health_report()
    if raw is None:
        return None
    try:
        return HealthReport.model_validate(raw)
    except ValidationError as exc:
        log.warning("kept_health_report_unreadable", error=str(exc).splitlines()[0])
        return None


def run(args: argparse.Namespace) -> int:
    if not 0 < args.row_fraction <= 1:
        raise ConfigError(f"--row-fraction {args.row_fraction} must be in (0, 1]")
    if not 1 <= args.pulses <= 100:
        raise ConfigError(f"--pulses {args.pulses} must be in 1..100")
    if not 1 <= args.top <= 1000:
        raise ConfigError(f"--top {args.top} must be in 1..1000")
    if not 1 <= args.tile <= 256:
        raise ConfigError(f"--tile {args.tile} must be in 1..256")
    kept_after_exit = False
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
            if args.wear_only:
                t = time.perf_counter()
                wear = read_wear(drv, chips, args.top, args.tile)
                report = HealthReport(
                    created=datetime.now(UTC).isoformat(timespec="seconds"),
                    device=args.url,
                    driver=info.driver,
                    preset=info.preset,
                    row_fraction=args.row_fraction,
                    chips=[],
                    wear=wear,
                    duration_s=time.perf_counter() - t,
                )
            else:
                report = scan(
                    drv,
                    args.url,
                    regions,
                    pulses=args.pulses,
                    row_fraction=args.row_fraction,
                    top=args.top,
                    tile=args.tile,
                )
                if not args.no_keep:
                    report = merge(kept_report(drv), report)
                    drv.keep_health_report(report.model_dump(mode="json"))
                    kept_after_exit = drv.records_outlive_process
        except DriverError as exc:
            raise HilError(f"health scan failed on {args.url}: {exc}") from exc
    text = report.model_dump_json(indent=1)
    written = ""
    if not args.wear_only:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        args.out.mkdir(parents=True, exist_ok=True)
        for name in (f"health-{stamp}.json", "latest.json"):
            atomic_write_bytes(args.out / name, (text + "\n").encode())
        written = f"; wrote {args.out / 'latest.json'}"
        if not args.no_keep and kept_after_exit:
            written += "; the device keeps it for placement"
        elif not args.no_keep:
            written += (
                f"; this in-process device forgets it when this command ends (no state "
                f"dir): runs can use it with --set device.health={args.out / 'latest.json'}"
            )
    if args.json:
        print(text)
    else:
        _print(report, args.top)
    print(f"done in {report.duration_s:.1f} s{written}", file=sys.stderr)
    return 0


def _print(report: HealthReport, top: int) -> None:
    for h in report.chips:
        fr = ", ".join(f"{k} {v:.3%}" for k, v in h.fractions.items())
        print(
            f"chip {h.chip} {h.region}: {len(h.bad_cells)} bad cells, {len(h.bad_rows)} bad "
            f"rows {h.bad_rows[:8]}, {len(h.bad_cols)} bad columns {h.bad_cols[:8]}; "
            f"devices {fr} (scanned {h.scanned or report.created})"
        )
    if report.wear is None:
        print("wear ledger: not kept by this device")
        return
    for w in report.wear:
        print(
            f"chip {w.chip} wear: {w.set_pulses} SET pulses, {w.resets} RESETs; "
            f"{w.devices_pulsed} devices pulsed, max {w.max_set_pulses} SET / "
            f"{w.max_resets} RESET per device, mean {w.mean_set_pulses:.2f} SET"
        )
        for d in w.most_worn_devices[: min(top, 5)]:
            print(f"  device ({d.row}, {d.col}) {d.device}: {d.set_pulses} SET, {d.resets} RESET")
        for t in w.most_worn_tiles[: min(top, 5)]:
            print(f"  tile {t.region}: {t.set_pulses} SET, {t.resets} RESET")
