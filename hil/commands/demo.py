"""``hil demo``: the main job, short. A hardware-in-the-loop OSTTP run on JSB Chorales
against the embedded PCM simulator (HERMES-like preset), with progress bars, a log line
per epoch, and a run directory with metrics, checkpoints and ``report.html``.

It is ``hil train`` on the paper's hardware configuration (88 → 150 SNU → 88; W1, W2 on
chip 0, B on chip 1; the paper's "chip 1" and "chip 2") for 3 epochs, with SGD at lr 1e-2 and the readout bias started at the
keys' log-odds (the settings that learn fastest in few epochs; the 15-epoch tuned run is
``configs/jsb_osttp_hil_tuned.yaml``). Data: the standard JSB split, from ``HIL_DATA_DIR``
or else the copy shipped in the package, so a fresh offline machine reproduces the README's
figure; ``--data chorales`` trains on the Bach chorales built from music21's corpus instead
(a different benchmark). It says which data it used and whether the test NLL is comparable
to published numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.commands.train import DATA_HELP, NO_WAIT_HELP, print_summary, say
from hil.trainer.session import TrainRequest, train

DEMO_SETTINGS = (
    "name=demo",
    "optim.lr=1e-2",
    "network.readout_bias_init=key_frequency",
    "train.epochs=3",
    "device.refresh_every=10",
)


def _run(args: argparse.Namespace) -> int:
    req = TrainRequest(
        config=None,
        device=args.device,
        run_dir=args.run_dir,
        data=args.data,
        overrides=(
            *DEMO_SETTINGS,
            *(() if args.epochs is None else (f"train.epochs={args.epochs}",)),
            *args.overrides,
        ),
        progress=args.progress,
        wait=not args.no_wait,
    )
    print(f"hil demo: hardware-in-the-loop OSTTP on JSB Chorales, device {args.device}")
    print_summary(train(req, notify=say))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job, short: HIL OSTTP training on the embedded PCM simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--device",
        default="sim://?preset=hermes&seed=0",
        help="device URL (default: the in-process hermes simulator)",
    )
    p.add_argument("--run-dir", type=Path, help="run directory (default: runs/demo-<time>)")
    p.add_argument("--epochs", type=int, help="epochs (default 3)")
    p.add_argument("--data", metavar="standard|chorales|PATH", help=DATA_HELP)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run-config value (repeatable)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    p.add_argument("--no-wait", action="store_true", help=NO_WAIT_HELP)
    p.set_defaults(func=_run)
