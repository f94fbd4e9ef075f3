"""``hil keys generate DIR [--name NAME]``: write a CURVE key pair (drivers.auth)."""

from __future__ import annotations

import argparse

from drivers import DriverError
from drivers.auth import generate_keypair
from hil.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="CURVE key pairs for 'hil serve --auth-keys'")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = sub.add_parser(
        "generate",
        help="write DIR/NAME.key (public) and DIR/NAME.key_secret",
        description="Write a CURVE key pair with zmq.auth. Give the server "
        "'--name server'; copy each client's NAME.key into the server's "
        "--auth-keys directory.",
    )
    g.add_argument("directory")
    g.add_argument("--name", default="client", help="file stem (default: client)")
    g.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    try:
        public, secret = generate_keypair(args.directory, args.name)
    except DriverError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"public key: {public}\nsecret key: {secret} (keep private)")
    return 0
