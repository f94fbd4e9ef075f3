"""Board link bytes per epoch of the tuned HIL run, over the board emulator's serial link.

Runs ``configs/jsb_osttp_hil_tuned.yaml`` (the full JSB training split, batch 16) for
``--epochs`` epochs against ``hil board-emulator --pty`` through the real board driver
(``board://``). Per epoch (training, evaluation of valid and test, the per-epoch reads) it
reports the run's own link accounting from ``metrics.jsonl``: ``link_bytes`` (sent +
received on the serial link) and ``link_s_est``, their time at ``--baud`` (8N1: 10 bits per
byte; a pty has no baud limit, so the emulated run itself is much faster). Over the whole
run (set-up and programming included) the bytes are split by board command
(``<command>#frames`` counts its frames), and per epoch too (``per_epoch_bytes_by_command``:
the bytes between the trainer's link-counter reads).

The emulator runs its own firmware (1.4: MVM replies carry the ADC codes packed, see
``docs/board-protocol.md``); the same run is then repeated against an emulator reporting
``--compare-firmware`` (default 1.3: the codes travel unpacked, one byte each) and the two
runs' metrics (every ``metrics.jsonl`` field except machine timings and link bytes) must be
identical: ``metrics_identical``. ``fewer_than_before`` divides ``results/bench_link_before.json``
(the code before #17) by this run's bytes per epoch.

Usage: ``python scripts/bench_link.py [--epochs 1] [--baud 921600] [--compare-firmware 1.3]
[--out results/bench_link.json]``
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

import drivers.board.hardware as hardware
import drivers.board.serial_link as serial_link
from hil.logging import configure_logging
from hil.trainer.runs import RunDir
from hil.trainer.session import TrainRequest, train

CONFIG = REPO / "configs" / "jsb_osttp_hil_tuned.yaml"
BEFORE = REPO / "results" / "bench_link_before.json"
MACHINE_FIELDS = ("epoch_s", "eval_s", "time", "train_cpu_s", "train_s")
"""metrics.jsonl fields that are machine timings (they differ between any two runs)"""


class Meter:
    """Bytes per board command over the whole run (both ways; ``<command>#frames``)."""

    def __init__(self) -> None:
        self.by_cmd: Counter[str] = Counter()
        self.marks: list[Counter[str]] = []
        """``by_cmd`` at each ``link_bytes()`` call: the trainer's per-epoch windows"""

    def install(self) -> tuple[Any, Any]:
        """Count through ``SerialLink.transact`` and mark at each ``link_bytes()`` (the
        trainer's epoch records); returns the originals to put back."""
        meter = self
        orig_transact = serial_link.SerialLink.transact

        def transact(self, opcode: int, payload: bytes, **k: Any):  # type: ignore[no-untyped-def]
            w0, r0 = self.stats.bytes_written, self.stats.bytes_read
            try:
                return orig_transact(self, opcode, payload, **k)
            finally:
                name = k.get("name") or hex(opcode)
                meter.by_cmd[name] += (self.stats.bytes_written - w0) + (self.stats.bytes_read - r0)
                meter.by_cmd[f"{name}#frames"] += 1

        serial_link.SerialLink.transact = transact  # type: ignore[method-assign]
        orig_link_bytes = hardware.HardwareDriver.link_bytes

        def link_bytes(self):  # type: ignore[no-untyped-def]
            meter.marks.append(Counter(meter.by_cmd))
            return orig_link_bytes(self)

        hardware.HardwareDriver.link_bytes = link_bytes  # type: ignore[method-assign]
        return orig_transact, orig_link_bytes


def start_emulator(seed: int, firmware: str | None = None) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hil", "--log-level", "warning", "board-emulator", "--pty"]
    cmd += ["--firmware", firmware] if firmware else []
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
    epochs: int,
    baud: int,
    data: Path,
    seed: int,
    overrides: tuple[str, ...] = (),
    firmware: str | None = None,
) -> dict[str, Any]:
    meter = Meter()
    orig_transact, orig_link_bytes = meter.install()
    proc, port = start_emulator(seed, firmware)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(
                TrainRequest(
                    config=CONFIG,
                    device=f"board://?port={port}&timeout_s=5&retries=3&baudrate={baud}",
                    seed=seed,
                    epochs=epochs,
                    run_dir=Path(tmp) / "run",
                    progress=False,
                    overrides=(f"data.path={data}", *overrides),
                )
            )
            metrics = RunDir.open(Path(tmp) / "run").metrics()
    finally:
        serial_link.SerialLink.transact = orig_transact  # type: ignore[method-assign]
        hardware.HardwareDriver.link_bytes = orig_link_bytes  # type: ignore[method-assign]
        proc.terminate()
        proc.wait(timeout=30)
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "config": str(CONFIG.relative_to(REPO)),
        "overrides": list(overrides),
        "epochs": epochs,
        "firmware": firmware or "emulator default",
    }
    per_epoch = [
        {k: m[k] for k in ("link_bytes", "link_bytes_sent", "link_bytes_received", "link_s_est")}
        for m in metrics
    ]
    run_total = sum(v for k, v in meter.by_cmd.items() if "#" not in k)
    out["per_epoch"] = per_epoch
    out["bytes_per_epoch"] = int(np.mean([e["link_bytes"] for e in per_epoch]))
    out["s_per_epoch_at_baud"] = round(10.0 * out["bytes_per_epoch"] / baud, 1)
    out["run_bytes"] = run_total
    out["setup_and_close_bytes"] = run_total - sum(e["link_bytes"] for e in per_epoch)
    out["run_bytes_by_command"] = dict(sorted(meter.by_cmd.items()))
    # the trainer reads the link counters once before its first epoch and once per epoch
    windows = [
        {k: v for k, v in sorted((b - a).items()) if "#" not in k}
        for a, b in zip(meter.marks, meter.marks[1:], strict=False)
    ]
    if len(windows) == len(per_epoch) and all(
        sum(w.values()) == e["link_bytes"] for w, e in zip(windows, per_epoch, strict=True)
    ):
        out["per_epoch_bytes_by_command"] = windows
    out["metrics"] = [
        {k: v for k, v in m.items() if k not in MACHINE_FIELDS and not k.startswith("link_")}
        for m in metrics
    ]
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
    parser.add_argument(
        "--compare-firmware",
        default="1.3",
        help="repeat the run on an emulator reporting this firmware and compare ('' = skip)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_link.json")
    args = parser.parse_args()
    configure_logging("warning")
    result = run(args.epochs, args.baud, args.data, args.seed, tuple(args.set))
    if BEFORE.is_file() and not args.set:
        before = json.loads(BEFORE.read_text())["bytes_per_epoch"]
        result["before_bytes_per_epoch"] = before
        result["fewer_than_before"] = round(before / result["bytes_per_epoch"], 2)
    if args.compare_firmware:
        other = run(
            args.epochs, args.baud, args.data, args.seed, tuple(args.set), args.compare_firmware
        )
        keys = ("firmware", "bytes_per_epoch", "s_per_epoch_at_baud", "run_bytes_by_command")
        result["compared"] = {
            k: other[k] for k in (*keys, "per_epoch_bytes_by_command") if k in other
        }
        result["fewer_than_compared"] = round(
            other["bytes_per_epoch"] / result["bytes_per_epoch"], 2
        )
        result["metrics_identical"] = other["metrics"] == result["metrics"]
    text = json.dumps(result, indent=2, default=str)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
