"""The ``hil`` command line: a thin shell that parses, configures logging, and calls library code.

No training, physics or protocol logic lives here. Each sub-command lives in its own
module under :mod:`hil.commands` exposing ``register(subparsers)``; the module adds its
parser and sets ``func(args) -> int`` as the default. Add a command by adding its module
name to :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hil import __version__
from hil.errors import HilError
from hil.logging import LEVELS, configure_logging

COMMAND_MODULES: tuple[str, ...] = (
    "hil.commands.demo",
    "hil.commands.train",
    "hil.commands.sweep",
    "hil.commands.runs",
    "hil.commands.data",
    "hil.commands.board",
    "hil.commands.serve",
    "hil.commands.audit",
    "hil.commands.status",
    "hil.commands.keys",
    "hil.commands.driver",
    "hil.commands.selfcheck",
    "hil.commands.characterize",
    "hil.commands.health",
    "hil.commands.dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil",
        description="Hardware-in-the-loop training of spiking networks on PCM crossbars.",
    )
    parser.add_argument("--version", action="version", version=f"pcm-hil {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=LEVELS, help="minimum log level (default: info)"
    )
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines (default: JSON when stderr is not a terminal)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    configure_logging(args.log_level, json=args.log_json)
    try:
        return int(args.func(args) or 0)
    except HilError as exc:
        print(f"hil {args.command}: {exc.label}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"hil {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
