"""``hil board-emulator``: run the emulated two-chip PCM board on a pty or a TCP port.

Prints the device path (``--pty``, default) or ``socket://127.0.0.1:PORT`` (``--tcp PORT``)
as its first stdout line, then serves the board's wire protocol until SIGINT/SIGTERM.
Point a set-up file's ``link.port`` (or ``board://…?port=…``) at that address.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drivers import DriverError
from drivers.board import make_engine
from drivers.board.emulator import FAULT_KINDS, run
from hil.errors import ConfigError


def _fault_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"fault kinds {text!r}: expected a comma list of {', '.join(FAULT_KINDS)}"
        )
    return kinds


def _firmware(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in text.split("."))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"firmware {text!r} must be MAJOR.MINOR, e.g. 1.2"
        ) from None
    return major, minor


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "board-emulator",
        help="emulate the two-chip PCM board on a pty or TCP port (prints its address)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--pty", action="store_true", help="serve on a new pseudo-terminal (default)"
    )
    where.add_argument(
        "--tcp",
        type=int,
        metavar="PORT",
        help="serve on 127.0.0.1:PORT for socket:// (0 picks a free port)",
    )
    p.add_argument(
        "--preset",
        default="hermes",
        help="simulator preset of both chips: a built-in name or a preset file PATH.yaml (default hermes)",
    )
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="X",
        help="probability per byte of a link fault, both directions (default 0)",
    )
    p.add_argument(
        "--faults",
        type=_fault_kinds,
        default=FAULT_KINDS,
        metavar="KINDS",
        help="fault kinds, comma separated (default corrupt,drop,delay)",
    )
    p.add_argument(
        "--firmware",
        type=_firmware,
        default=None,
        metavar="MAJOR.MINOR",
        help="firmware version to report (default: the emulator's own)",
    )
    p.add_argument(
        "--clock",
        choices=("virtual", "wall"),
        default="virtual",
        help="chip clock: virtual (deterministic, default) or wall time",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="restore the chips from DIR at start and save them there on exit (non-volatile PCM)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not 0.0 <= args.fault_rate <= 1.0:
        raise ConfigError(f"--fault-rate {args.fault_rate} must be in [0, 1]")
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        raise ConfigError(f"--tcp {args.tcp} is not a TCP port (0..65535)")
    state_dir = None if args.state_dir is None else Path(args.state_dir)
    try:
        engine = make_engine(
            args.preset, args.seed, firmware=args.firmware, clock=args.clock, state_dir=state_dir
        )
    except DriverError as exc:
        raise ConfigError(str(exc)) from exc
    run(
        engine,
        tcp_port=args.tcp,
        fault_rate=args.fault_rate,
        faults=args.faults,
        seed=args.seed,
        state_dir=state_dir,
    )
    return 0
