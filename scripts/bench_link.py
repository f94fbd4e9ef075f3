"""Board link bytes per epoch of the tuned HIL run, over the board emulator's serial link.

Runs ``configs/jsb_osttp_hil_tuned.yaml`` (the full JSB training split, batch 16) for
``--epochs`` epochs against ``hil board-emulator --pty`` through the real board driver
(``board://``), and counts the bytes the serial link wrote and read (``LinkStats``): once
for opening and programming the chips (``setup_*``) and once per epoch (training, the
evaluation of valid and test, and the per-epoch saturation reads). Bytes are split by
command (MVM, pulse, read, ...; ``<command>#frames`` counts its frames). ``*_s_at_baud`` is the time these bytes take on a real
line at ``--baud`` (8N1: 10 bits per byte); a pty has no baud limit, so the emulated run
itself is much faster.

Usage: ``python scripts/bench_link.py [--epochs 1] [--baud 921600] [--out results/bench_link.json]``
"""

# ruff: noqa: E402  (thread limits must be set before numpy is imported)
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

import drivers.board.serial_link as serial_link
from hil.logging import configure_logging
from hil.trainer.chip_backend import ChipBackend
from hil.trainer.session import TrainRequest, train
from hil.trainer.trainer import Trainer

CONFIG = REPO / "configs" / "jsb_osttp_hil_tuned.yaml"


class Meter:
    """Byte counters of the run's serial link: totals and per command, with snapshots."""

    def __init__(self) -> None:
        self.links: list[Any] = []
        self.by_cmd: Counter[str] = Counter()
        self.marks: list[tuple[str, int, int, dict[str, int]]] = []

    def totals(self) -> tuple[int, int]:
        return (
            sum(k.stats.bytes_written for k in self.links),
            sum(k.stats.bytes_read for k in self.links),
        )

    def mark(self, name: str) -> None:
        w, r = self.totals()
        self.marks.append((name, w, r, dict(self.by_cmd)))

    def install(self) -> None:
        """Record every SerialLink the driver opens and each command's bytes (both ways)."""
        meter = self
        orig_init, orig_transact = serial_link.SerialLink.__init__, serial_link.SerialLink.transact

        def init(self, *a: Any, **k: Any) -> None:  # type: ignore[no-untyped-def]
            orig_init(self, *a, **k)
            meter.links.append(self)

        def transact(self, opcode: int, payload: bytes, **k: Any):  # type: ignore[no-untyped-def]
            w0, r0 = self.stats.bytes_written, self.stats.bytes_read
            try:
                return orig_transact(self, opcode, payload, **k)
            finally:
                name = k.get("name") or hex(opcode)
                meter.by_cmd[name] += (self.stats.bytes_written - w0) + (self.stats.bytes_read - r0)
                meter.by_cmd[f"{name}#frames"] += 1

        serial_link.SerialLink.__init__ = init  # type: ignore[method-assign]
        serial_link.SerialLink.transact = transact  # type: ignore[method-assign]
        orig_run, orig_metrics = Trainer.run_epochs, ChipBackend.epoch_metrics

        def run_epochs(self, epochs: int):  # type: ignore[no-untyped-def]
            meter.mark("setup")
            return orig_run(self, epochs)

        def device_metrics(self):  # type: ignore[no-untyped-def]
            out = orig_metrics(self)
            meter.mark(f"epoch{len(meter.marks)}")
            return out

        Trainer.run_epochs = run_epochs  # type: ignore[method-assign]
        ChipBackend.epoch_metrics = device_metrics  # type: ignore[method-assign]


def start_emulator(seed: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hil", "--log-level", "warning", "board-emulator", "--pty"]
    proc = subprocess.Popen(
        [*cmd, "--preset", "hermes", "--seed", str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    port = proc.stdout.readline().strip() if proc.stdout else ""
    if not port:
        proc.terminate()
        raise RuntimeError("board emulator did not start")
    return proc, port


def run(
    epochs: int, baud: int, data: Path, seed: int, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    meter = Meter()
    meter.install()
    proc, port = start_emulator(seed)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(
                TrainRequest(
                    config=CONFIG,
                    device=f"board://?port={port}&timeout_s=5&retries=3",
                    seed=seed,
                    epochs=epochs,
                    run_dir=Path(tmp) / "run",
                    progress=False,
                    overrides=(f"data.path={data}", *overrides),
                )
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "config": str(CONFIG.relative_to(REPO)),
        "overrides": list(overrides),
        "epochs": epochs,
    }
    prev = ("start", 0, 0, {})
    per_epoch = []
    for mark in meter.marks:
        name, w, r, cmds = mark
        sent, recv = w - prev[1], r - prev[2]
        entry = {
            "bytes_sent": sent,
            "bytes_received": recv,
            "bytes": sent + recv,
            "s_at_baud": round(10.0 * (sent + recv) / baud, 1),
            "bytes_by_command": {k: v - prev[3].get(k, 0) for k, v in sorted(cmds.items())},
        }
        if name == "setup":
            out["setup"] = entry
        else:
            per_epoch.append(entry)
        prev = mark
    out["per_epoch"] = per_epoch
    out["bytes_per_epoch"] = int(np.mean([e["bytes"] for e in per_epoch]))
    out["s_per_epoch_at_baud"] = round(10.0 * out["bytes_per_epoch"] / baud, 1)
    out.update(
        baud=baud,
        test_nll=summary.get("test_nll"),
        emulated_wall_s=round(wall, 1),
        machine=f"{platform.machine()} {platform.python_version()} numpy {np.__version__}",
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HIL_DATA_DIR", REPO.parent / "shared" / "data"))
        / "jsb_chorales.pickle",
    )
    parser.add_argument(
        "--set", action="append", default=[], help="config override KEY=VALUE (quick checks)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_link.json")
    args = parser.parse_args()
    configure_logging("warning")
    result = run(args.epochs, args.baud, args.data, args.seed, tuple(args.set))
    text = json.dumps(result, indent=2, default=str)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
