"""``hil characterize URL --out chip.yaml``: measure a chip, write its digital twin preset.

Measures a region of one chip through the driver contract (so it runs on ``sim://``, on a
``hil serve`` and on the board) — RESET level, SET step curve, program-and-verify error,
read noise against G and time, drift exponent against G, ADC, device-to-device spread and
faults (:mod:`hil.characterize.measure`) — fits the preset's models
(:mod:`hil.characterize.twin`) and writes the preset file (``--out``), the fit report
(``--report``, default next to it with ``.html``) and its numbers (``.json``). The twin
runs anywhere a preset is accepted: ``sim://?preset=chip.yaml``.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from drivers import DriverError, open_driver
from hil.characterize.measure import Plan, measure
from hil.characterize.report import write_report
from hil.characterize.twin import fit_twin
from hil.errors import ConfigError, HilError
from protocols.region import Region
from simulator import PresetError, get_preset
from simulator.preset_file import write_preset_file

PHASES = ("reset", "set", "drift", "verify", "fit")
"""Progress bars, in order (the last, the fit, needs no device)."""


def parse_region(text: str | None, chip: int, rows: int, cols: int) -> Region:
    """``R0:R1,C0:C1`` (half-open) on ``chip``; ``None`` = the whole chip."""
    if text is None:
        return Region(chip, 0, rows, 0, cols)
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*,\s*(\d+):(\d+)\s*", text)
    if not m:
        raise ConfigError(f"--region {text!r}: expected R0:R1,C0:C1, e.g. 0:64,0:256")
    r0, r1, c0, c1 = (int(g) for g in m.groups())
    if not (r0 < r1 <= rows and c0 < c1 <= cols):
        raise ConfigError(f"--region {text!r}: must be non-empty within {rows}x{cols}")
    if c1 - c0 < 16:
        raise ConfigError(f"--region {text!r}: needs at least 16 columns (8 level bands)")
    return Region(chip, r0, r1, c0, c1)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "characterize",
        help="measure a chip and write its digital twin (a preset file and a fit report)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="driver URL: sim://..., tcp://host:port, board://lab.yaml")
    p.add_argument("--out", type=Path, required=True, help="preset file to write (chip.yaml)")
    p.add_argument("--report", type=Path, help="fit report (default: --out with .html)")
    p.add_argument("--chip", type=int, default=0, help="chip index (default 0)")
    p.add_argument("--region", help="R0:R1,C0:C1 half-open (default: the whole chip)")
    p.add_argument(
        "--drift-hours",
        type=float,
        default=1.0,
        help="longest real wait for drift reads on a device without clock control "
        "(a board); a simulator advances its clock to 1 day instead (default 1)",
    )
    p.add_argument("--reads", type=int, default=4, help="repeated reads per point (default 4)")
    p.add_argument("--name", help="preset name (default: the --out file's stem)")
    p.add_argument(
        "--base", default="hermes", help="preset supplying unmeasured fields (default hermes)"
    )
    p.add_argument(
        "--tolerance-us",
        type=float,
        default=0.5,
        help="program-and-verify tolerance of the programming-error phase (default 0.5)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.drift_hours <= 24 * 30:
        raise ConfigError(f"--drift-hours {args.drift_hours} must be in (0, 720]")
    if not 2 <= args.reads <= 64:
        raise ConfigError(f"--reads {args.reads} must be in 2..64")
    if args.out.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"--out {args.out}: a preset file ends in .yaml or .yml")
    try:
        base = get_preset(args.base)
    except PresetError as exc:
        raise ConfigError(f"--base: {exc}") from exc
    report = args.report or args.out.with_suffix(".html")
    name = args.name or args.out.stem
    console = Console(stderr=True)
    enabled = console.is_terminal if args.progress is None else args.progress
    try:
        drv = open_driver(args.url)
    except DriverError as exc:
        raise HilError(f"cannot open driver {args.url!r}: {exc}") from exc
    t0 = time.perf_counter()
    with (
        drv,
        Progress(
            TextColumn("[bold]{task.description:>7}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        ) as bars,
    ):
        tasks = {ph: bars.add_task(ph, total=1.0) for ph in PHASES}
        bars.update(tasks["fit"], visible=False)

        def tick(phase: str, frac: float) -> None:
            bars.update(tasks[phase], completed=frac)

        info = drv.info()
        if not 0 <= args.chip < info.chips:
            raise ConfigError(f"--chip {args.chip}: the device has chips 0..{info.chips - 1}")
        region = parse_region(args.region, args.chip, info.rows, info.cols)
        plan = Plan(
            region, reads=args.reads, drift_hours=args.drift_hours, tolerance_us=args.tolerance_us
        )
        try:
            m = measure(drv, plan, tick)
        except DriverError as exc:
            raise HilError(f"measurement failed on {args.url}: {exc}") from exc
        bars.update(tasks["fit"], visible=True)
        t_fit = time.perf_counter()
        params, rep = fit_twin(m, base, name)
        bars.update(tasks["fit"], completed=1.0)
    rep["timings_s"]["fit"] = time.perf_counter() - t_fit
    rep["timings_s"]["total"] = time.perf_counter() - t0
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"pcm-hil digital twin '{name}', fitted by hil characterize on {stamp}\n"
        f"source {args.url} ({info.driver}, preset {info.preset!r}), region {region}\n"
        f"fit report: {report.name}"
    )
    write_preset_file(params, args.out, header)
    write_report(report, rep, params, args.url)
    fr = rep["faults"]["fractions"]
    print(
        f"characterized {rep['n_devices']} devices of {region} in "
        f"{rep['timings_s']['total']:.1f} s: g_max {params.g_max_us:.3g} µS, "
        f"RESET {params.g_reset_us:.3g} µS, faults "
        + ", ".join(f"{k} {v:.3%}" for k, v in fr.items())
    )
    print(f"wrote {args.out} and {report} (use it as sim://?preset={args.out})")
    return 0
