"""``hil audit URL-or-STATE-DIR``: the server's audit trail (who did what, where, when)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers import DriverError
from hil.errors import ConfigError
from protocols import Region

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``2h``/``30m``/``7d`` ago, an ISO date/time (UTC unless it says), or Unix seconds."""
    now = time.time() if now is None else now
    if m := _AGO.match(text.strip()):
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r}: give a duration ago (90s, 30m, 2h, 7d), an ISO time "
            f"(2026-12-01T14:00) or Unix seconds"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _region(text: str) -> Region:
    try:
        return Region(*(int(v) for v in text.split(",")))
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"region {text!r} must be CHIP,ROW0,ROW1,COL0,COL1 (half-open): {exc}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="print a server's audit trail (from its URL or its --state-dir)",
        description="Print who changed which chip region when: one row per state-changing "
        "or lease request, refused ones included (time UTC, identity, run id, verb, region, "
        "SET pulses, outcome, request id). TARGET is a server URL (tcp://..., ipc://...) or "
        "a --state-dir (read directly, also while the server runs).",
    )
    p.add_argument("target", metavar="URL-or-STATE-DIR")
    p.add_argument("--since", type=parse_since, help="e.g. 2h, 7d, 2026-12-01T14:00")
    p.add_argument("--identity", help="only this client identity")
    p.add_argument(
        "--region",
        type=_region,
        help="only requests overlapping CHIP,ROW0,ROW1,COL0,COL1 (and whole-device ones)",
    )
    p.add_argument("--limit", type=int, default=10_000, help="at most this many rows")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def fetch(args: argparse.Namespace) -> list[dict[str, Any]]:
    filters = {"since": args.since, "identity": args.identity, "region": args.region}
    if Path(args.target).is_dir():
        from drivers.ledger import AuditLog, open_read_only

        db = open_read_only(args.target)
        try:
            return AuditLog(db).query(**filters, limit=args.limit)
        finally:
            db.close()
    from drivers import open_driver
    from drivers.remote import RemoteDriver

    with open_driver(args.target) as d:
        if not isinstance(d, RemoteDriver):
            raise ConfigError(f"{args.target}: give a server URL (tcp://, ipc://) or a state dir")
        return d.audit(**filters, limit=args.limit)


def _where(r: dict[str, Any]) -> str:
    if r["chip"] is None:
        return "whole device"
    return f"chip{r['chip']}[{r['row0']}:{r['row1']},{r['col0']}:{r['col1']}]"


def run(args: argparse.Namespace) -> int:
    try:
        rows = fetch(args)
    except DriverError as exc:
        raise ConfigError(str(exc)) from exc
    out = sys.stdout
    if args.json:
        for r in rows:
            out.write(json.dumps(r) + "\n")
        return 0
    out.write(
        f"{'time (UTC)':<23} {'identity':<16} {'run':<12} {'verb':<13} "
        f"{'region':<22} {'pulses':>8}  outcome  request\n"
    )
    for r in rows:
        t = datetime.fromtimestamp(r["time"], UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
        out.write(
            f"{t:<23} {r['identity'][:16]:<16} {r['run_id'][:12] or '-':<12} {r['verb']:<13} "
            f"{_where(r):<22} {r['pulses']:>8}  {r['outcome']:<8} {r['request_id']}\n"
        )
    out.write(f"{len(rows)} row(s)\n")
    return 0
