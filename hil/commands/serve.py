"""``hil serve DRIVER_URL``: host one driver on a ZeroMQ endpoint (drivers.server)."""

from __future__ import annotations

import argparse
import sys

from drivers import DriverError
from drivers.server import run_server
from hil.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a driver (simulator or board) to remote clients over ZeroMQ",
        description="Host DRIVER_URL (sim://..., board://...) on a ZeroMQ ROUTER socket. "
        "SIGINT/SIGTERM shut down gracefully, persisting the chip state of a sim:// "
        "driver with --state-dir; restarting on the same --state-dir restores it.",
    )
    p.add_argument("driver_url", help="e.g. 'sim://?preset=hermes&seed=0' or board://lab.yaml")
    p.add_argument(
        "--bind",
        action="append",
        metavar="ENDPOINT",
        help="endpoint to bind, repeatable (default tcp://127.0.0.1:5555; "
        "'tcp://127.0.0.1:*' picks a free port)",
    )
    p.add_argument(
        "--state-dir",
        help="keep the server's durable state here (one SQLite database, state.db): a "
        "sim:// driver's chips (snapshot + journal), reply records, leases, wear and audit",
    )
    p.add_argument(
        "--salvage",
        action="store_true",
        help="first copy what passes the checks out of a damaged --state-dir database, "
        "report what was lost (stderr), then serve",
    )
    p.add_argument(
        "--auth-keys",
        metavar="DIR",
        help="require CURVE: allow the client public keys DIR/*.key (re-read on SIGHUP and "
        "when DIR changes; the server's own key is never a client); the server's key pair "
        "is DIR/server.key_secret unless --server-key is given",
    )
    p.add_argument("--server-key", metavar="FILE", help="the server's .key_secret file")
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        metavar="S",
        help="a client's leases lapse S seconds after its last message (default 10)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="heartbeat period clients are told to use (default 1)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not warn about a tcp:// bind reachable from other machines without --auth-keys",
    )
    p.add_argument(
        "--max-leases",
        type=int,
        default=256,
        metavar="N",
        help="leases one client identity may hold at once (default 256)",
    )
    p.set_defaults(func=run)


def _announce(endpoints: list[str]) -> None:
    for endpoint in endpoints:
        print(f"serving on {endpoint}", flush=True)


def _report_salvage(report: dict) -> None:  # type: ignore[type-arg]
    from drivers.salvage import format_report

    print(format_report(report), file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        run_server(
            args.driver_url,
            args.bind or ["tcp://127.0.0.1:5555"],
            state_dir=args.state_dir,
            salvage=args.salvage,
            on_salvaged=_report_salvage,
            auth_keys_dir=args.auth_keys,
            server_secret_key=args.server_key,
            lease_ttl_s=args.lease_ttl,
            heartbeat_interval_s=args.heartbeat_interval,
            insecure=args.insecure,
            max_leases=args.max_leases,
            on_ready=_announce,
        )
    except DriverError as exc:
        raise ConfigError(str(exc)) from exc
    return 0
