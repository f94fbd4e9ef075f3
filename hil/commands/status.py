"""``hil status URL [--json]``: what a ``hil serve`` is doing, and for whom."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from drivers import DriverError
from hil.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="a server's version, uptime, clients, reservations, queue, leases, rates, chip use",
        description="Ask a 'hil serve' at URL for its status: version and uptime, clients "
        "by identity (never their credentials), run reservations with run id, region and "
        "expiry, the queue, leases with region and holder, request "
        "rates over the last minute, per-chip use and wear, and the board's temperatures "
        "where it has a thermometer.",
    )
    p.add_argument("url", help="e.g. tcp://127.0.0.1:5555 (CURVE options as for any client)")
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    p.set_defaults(func=run)


def fetch(url: str) -> dict[str, Any]:
    from drivers import open_driver
    from drivers.remote import RemoteDriver

    with open_driver(url) as d:
        if not isinstance(d, RemoteDriver):
            raise ConfigError(f"{url}: 'hil status' needs a server URL (tcp://, ipc://)")
        return d.status()


def _region(r: dict[str, int]) -> str:
    return f"chip{r['chip']}[{r['row0']}:{r['row1']},{r['col0']}:{r['col1']}]"


def render(s: dict[str, Any]) -> str:
    lines = [
        f"{s['server']} (pcm-hil {s['server_version']}, protocol {s['protocol']}), up "
        f"{s['uptime_s']:.0f} s, {s['driver']} {s['preset']}, "
        f"{'state in ' + s['state_dir'] if s['state_dir'] else 'no --state-dir'}",
        f"clients ({len(s['clients'])}):",
    ]
    for c in s["clients"]:
        lines.append(
            f"  {c['identity']:<24} last seen {c['last_seen_s']:7.1f} s ago, "
            f"{c['requests']} requests, {c['leases']} leases"
        )
    lines.append(f"leases ({len(s['leases'])}):")
    for x in s["leases"]:
        lines.append(
            f"  {x['lease_id']:<8} {x['mode']:<5} {_region(x['region']):<24} {x['identity']}"
        )
    lines.append(f"reservations ({len(s.get('reservations', []))}):")
    for x in s.get("reservations", []):
        lines.append(
            f"  {x['reservation_id']:<6} {x['run_id']:<28} {x['name']:<8} "
            f"{_region(x['region']):<24} {x['identity']}, expires in {x['expires_in_s']:.0f} s"
        )
    lines.append(f"queue ({len(s.get('queue', []))}):")
    for q in s.get("queue", []):
        lines.append(
            f"  {q['position']:>3}. run {q['run_id']} of {q['identity']}, {q['cells']} cells, "
            f"waiting {q['waiting_s']:.0f} s"
        )
    rates = ", ".join(f"{k} {v:.1f}/s" for k, v in sorted(s["request_rates"].items()))
    lines.append(f"requests in the last minute: {rates or 'none'}")
    for c in s["chips"]:
        lines.append(
            f"chip {c['chip']}: {c.get('reserved_fraction', 0.0):.1%} of cells reserved, "
            f"{c['leased_fraction']:.1%} leased, "
            f"{c['set_pulses']} SET pulses and {c['resets']} RESETs in the wear ledger"
        )
    if s["temperatures_c"]:
        temps = ", ".join(f"{k} {v:.1f} °C" for k, v in s["temperatures_c"].items())
        lines.append(f"temperatures: {temps}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        status = fetch(args.url)
    except DriverError as exc:
        raise ConfigError(str(exc)) from exc
    sys.stdout.write((json.dumps(status) if args.json else render(status)) + "\n")
    return 0
