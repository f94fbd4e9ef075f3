"""Run directories: everything an operator needs to trust, resume and compare a run.

Layout of ``RUN_DIR``::

    config.json        resolved run config (after file, CLI flags and --set overrides)
    environment.json   python, platform, package versions, git commit, host
    device.json        driver URL and the driver's identity from ``info()``, placement
    metrics.jsonl      one line per epoch (train/valid/test metrics, pulses, refreshes, time)
    events.jsonl       run events (start, resume, programming, interrupt, finish, errors)
    checkpoint/        last complete epoch: software state (.npz + .json) and chip state
    summary.json       final and best metrics (test_nll or test_accuracy, best_epoch, ...)
    report.html        plots (PNG beside it) for the operator

Every whole-file write is atomic and every log line fsync'ed (:mod:`hil.fsio`), so a
``kill -9`` leaves a run that ``--resume`` can continue.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import HilError
from hil.faults import fault_point
from hil.fsio import append_jsonl, atomic_write_json, read_jsonl

TIMING_KEYS = (
    "epoch_s",
    "train_s",
    "train_cpu_s",
    "eval_s",
    "time",
    "wall_s",
    "device_time_s",
    "link_bytes",
    "link_bytes_sent",
    "link_bytes_received",
    "link_s_est",
)
"""Metric keys that depend on the machine's speed (and, for the device clock, on MVM
timing) or on the transport to the device (link bytes: none in-process)."""

PACKAGES = ("numpy", "pyzmq", "pydantic", "structlog", "pcm-hil", "torch", "music21")


class RunError(HilError):
    """A run directory is missing, incomplete or inconsistent."""


def environment() -> dict[str, Any]:
    """Python, platform, package versions and the git commit of the code."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "host": socket.gethostname(),
        "packages": versions,
        "git_commit": commit,
        "argv": sys.argv,
    }


@dataclass(frozen=True)
class RunDir:
    """One run's directory (see the module docstring for its layout)."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    @classmethod
    def create(cls, path: Path) -> RunDir:
        """A new run directory; refuses one that already holds a run."""
        path = Path(path)
        if (path / "config.json").exists():
            raise RunError(
                f"run directory {path} already holds a run; pass --resume to continue it "
                f"or choose another --run-dir"
            )
        path.mkdir(parents=True, exist_ok=True)
        fault_point("run.created")
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run directory (for --resume, ``hil runs show``)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise RunError(
                f"{path} is not a run directory (no config.json): if a run was stopped "
                f"before it recorded its config, start it again with "
                f"hil train CONFIG --run-dir {path}"
            )
        return cls(path)

    def event(self, name: str, **fields: Any) -> None:
        append_jsonl(self.events_file, {"event": name, "time": time.time(), **fields})

    def log_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_file, record)

    def metrics(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.metrics_file))

    def events(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.events_file))

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by ``records`` (on resume: the checkpoint's history)."""
        from hil.fsio import atomic_write_bytes, dumps

        atomic_write_bytes(self.metrics_file, "".join(dumps(r) + "\n" for r in records).encode())

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        import json

        file = self.path / name
        if not file.is_file():
            raise RunError(f"{file} is missing")
        return json.loads(file.read_text())

    def summary(self) -> dict[str, Any] | None:
        try:
            return self.read_json("summary.json")
        except RunError:
            return None


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric records minus :data:`TIMING_KEYS`: what must match between equivalent runs."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of ``values``:
    the spread every figure over seeds reports."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def list_runs(base: Path) -> list[RunDir]:
    """Run directories directly below ``base`` (or ``base`` itself), and the trials of the
    sweeps directly below it (``hil sweep`` directories: ``.sweep/`` beside the trials),
    newest first."""
    base = Path(base)
    if not base.exists():
        return []
    candidates = [base] if (base / "config.json").is_file() else []
    for p in base.iterdir():
        if (p / "config.json").is_file():
            candidates.append(p)
        elif (p / ".sweep").is_dir():
            candidates += [t for t in p.iterdir() if (t / "config.json").is_file()]
    candidates.sort(key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)
    return [RunDir(p) for p in candidates]
