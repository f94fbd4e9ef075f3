"""``hil sweep SPEC.yaml [--address ADDR] [--max-concurrent N] [--resume] [--sweep-dir DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.errors import ConfigError


def _run(args: argparse.Namespace) -> int:
    from hil.sweep.spec import load_spec

    if args.spec is None:
        if not (args.resume and args.sweep_dir):
            raise ConfigError("a SPEC is required (or --resume --sweep-dir DIR)")
        from hil.sweep.runner import load_state

        spec, trials = load_state(args.sweep_dir)
    else:
        spec, trials = load_spec(args.spec)  # every refusal happens here, before Ray starts
    sweep_dir = args.sweep_dir or Path("runs") / f"sweep-{spec.name}"
    from hil.sweep.runner import run_sweep

    summary = run_sweep(
        spec,
        trials,
        sweep_dir,
        address=args.address,
        max_concurrent=args.max_concurrent,
        num_cpus=args.num_cpus,
        resume=args.resume,
        progress=args.progress,
    )
    return 1 if summary["counts"]["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run many `hil train` runs (seeds, settings, rules, chips) on Ray",
        description="Run the trials of a sweep spec on Ray Tune (local, or a cluster with "
        "--address); every trial is a `hil train` run directory under the sweep directory; "
        "writes sweep.json and sweep.png.",
    )
    p.add_argument("spec", type=Path, nargs="?", help="sweep spec (.yaml)")
    p.add_argument("--address", help="join this Ray cluster (default: local Ray on this machine)")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="at most N trials at once")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --sweep-dir")
    p.add_argument(
        "--sweep-dir", type=Path, help="sweep directory (default: runs/sweep-<spec name>)"
    )
    p.add_argument(
        "--num-cpus", type=int, metavar="N", help="local Ray: CPUs to use (default: all cores)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live table (default: when stdout is a terminal)",
    )
    p.set_defaults(func=_run)
