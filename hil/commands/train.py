"""``hil train CONFIG [--device URL] [--run-dir DIR] [--resume] [--seed N] [--epochs N] [--set k=v …]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.trainer.session import TrainRequest, plural, train

DATA_HELP = (
    "JSB data: standard (default: $HIL_DATA_DIR, else the copy shipped in the package), "
    "chorales (music21's Bach chorales, built once into the cache; not comparable to "
    "published numbers) or the PATH of a standard pickle / built chorales folder"
)


NO_WAIT_HELP = (
    "when the chip regions are held by other runs, refuse at once (one line) instead of "
    "waiting in the server's queue"
)


def add_train_arguments(p: argparse.ArgumentParser, *, config_required: bool) -> None:
    if config_required:
        p.add_argument("config", type=Path, nargs="?", help="run config (.yaml/.yml/.toml)")
    p.add_argument(
        "--device",
        help="software | sim://?preset=hermes&seed=0 (default, in-process simulator) | "
        "tcp://host:port | ipc://path | board://setup.yaml | a driver plug-in's scheme "
        "(docs/writing-a-driver.md)",
    )
    p.add_argument("--run-dir", type=Path, help="run directory (default: runs/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--data", metavar="standard|chorales|PATH", help=DATA_HELP)
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=5e-4 (repeatable)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N batches (default: at every epoch end only)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    p.add_argument("--no-wait", action="store_true", help=NO_WAIT_HELP)


def request_from_args(args: argparse.Namespace, config: Path | None) -> TrainRequest:
    return TrainRequest(
        config=config,
        device=args.device,
        run_dir=args.run_dir,
        data=args.data,
        resume=args.resume,
        seed=args.seed,
        epochs=args.epochs,
        overrides=tuple(args.overrides),
        progress=args.progress,
        checkpoint_every=args.checkpoint_every,
        wait=not args.no_wait,
    )


def print_summary(summary: dict) -> None:
    m = summary["metric"]
    label = "NLL" if m == "nll" else m
    n = summary["epochs"]
    print(
        f"run {summary['run']}: {n} {plural(n, 'epoch')}, test {label} "
        f"{summary[f'test_{m}']:.4f} (best valid at epoch {summary['best_epoch']}), "
        f"{summary['pulses']} SET pulses, {summary['wall_s']:.1f} s"
    )
    print(f"data: {summary['data_source']}")
    verdict = "comparable" if summary.get("comparable_to_published") else "NOT comparable"
    why = summary.get("comparability")
    print(f"test {label} {verdict} to published numbers" + (f" ({why})" if why else ""))
    print(f"results: {summary['run']}/summary.json, metrics.jsonl, report.html")


def say(line: str) -> None:
    """Print an operator's line at once (progress bars and logs follow on stderr)."""
    print(line, flush=True)


def _run(args: argparse.Namespace) -> int:
    if args.config is None and not args.resume:
        raise SystemExit("hil train: a CONFIG file is required (or --resume --run-dir RUN)")
    print_summary(train(request_from_args(args, args.config), notify=say))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network (software, simulator, server or board)",
        description="Train a spiking network with an online rule, hardware in the loop.",
    )
    add_train_arguments(p, config_required=True)
    p.set_defaults(func=_run)
