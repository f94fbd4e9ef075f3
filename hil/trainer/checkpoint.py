"""Checkpoints: the complete software state of a run at a batch boundary, written atomically.

``checkpoint/state.json`` is the commit record, written last; it names the arrays file
(``arrays-<n>.npz``) and the chip snapshot it belongs to, so a crash while writing a new
checkpoint leaves the previous one intact. Software state: epoch and batch position, the
epoch's shuffle order, parameter values (host matrices and vectors), every device matrix's
accumulator χ and round-robin counter, the optimiser's moments, the RNG state, the request-id
sequence, and the metrics history.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.faults import fault_point
from hil.fsio import atomic_save_npz, atomic_write_json, remove_temp_files
from hil.trainer.runs import RunError

STATE_FILE = "state.json"


@dataclass
class Checkpoint:
    """What :func:`save` writes and :func:`load` returns."""

    epoch: int
    """epochs fully completed"""
    batch: int
    """batches completed within epoch ``epoch`` (0 at an epoch boundary)"""
    order: list[int]
    arrays: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    optim: dict[str, Any]
    request_seq: int
    attempt: int
    history: list[dict[str, Any]]
    partial: dict[str, float] = field(default_factory=dict)
    chip_snapshot: str | None = None


def _flatten_optim(optim: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    meta = {"epoch": optim["epoch"], "t": optim["t"], "m": [], "v": []}
    for kind in ("m", "v"):
        for k, v in optim[kind].items():
            arrays[f"optim.{kind}.{k}"] = np.asarray(v)
            meta[kind].append(k)
    return meta


def save(directory: Path, ck: Checkpoint, generation: int) -> None:
    """Write ``ck`` as checkpoint number ``generation`` (atomic; older arrays removed after)."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"param.{k}": np.asarray(v) for k, v in ck.arrays.items()}
    optim_meta = _flatten_optim(ck.optim, arrays)
    arrays_name = f"arrays-{generation:06d}.npz"
    atomic_save_npz(directory / arrays_name, arrays)
    fault_point("checkpoint.arrays_written")
    atomic_write_json(
        directory / STATE_FILE,
        {
            "generation": generation,
            "arrays": arrays_name,
            "epoch": ck.epoch,
            "batch": ck.batch,
            "order": ck.order,
            "rng_state": ck.rng_state,
            "optim": optim_meta,
            "request_seq": ck.request_seq,
            "attempt": ck.attempt,
            "history": ck.history,
            "partial": ck.partial,
            "chip_snapshot": ck.chip_snapshot,
        },
    )
    fault_point("checkpoint.committed")
    remove_stale(directory, arrays_name, ck.chip_snapshot)


def remove_stale(directory: Path, arrays_name: str | None, snapshot: str | None) -> list[str]:
    """Delete every generation's files but ``arrays_name`` and ``snapshot`` (older ones, and
    half-written newer ones a crash left uncommitted) and temp files; returns their names."""
    stale = [p.name for p in remove_temp_files(directory)]
    for old in directory.glob("arrays-*.npz"):
        if old.name != arrays_name:
            old.unlink(missing_ok=True)
            stale.append(old.name)
    for old in directory.glob("chips-*"):
        if old.name != snapshot:
            shutil.rmtree(old, ignore_errors=True)
            stale.append(old.name)
    return stale


def load(directory: Path) -> tuple[Checkpoint, int]:
    """The last committed checkpoint in ``directory`` and its generation."""
    state_file = directory / STATE_FILE
    if not state_file.is_file():
        raise RunError(f"no checkpoint in {directory}: the run never finished a batch")
    meta = json.loads(state_file.read_text())
    with np.load(directory / meta["arrays"]) as z:
        raw = {k: z[k] for k in z.files}
    params = {k[len("param.") :]: v for k, v in raw.items() if k.startswith("param.")}
    optim = {
        "epoch": meta["optim"]["epoch"],
        "t": meta["optim"]["t"],
        "m": {k: raw[f"optim.m.{k}"] for k in meta["optim"]["m"]},
        "v": {k: raw[f"optim.v.{k}"] for k in meta["optim"]["v"]},
    }
    ck = Checkpoint(
        epoch=meta["epoch"],
        batch=meta["batch"],
        order=meta["order"],
        arrays=params,
        rng_state=meta["rng_state"],
        optim=optim,
        request_seq=meta["request_seq"],
        attempt=meta["attempt"],
        history=meta["history"],
        partial=meta["partial"],
        chip_snapshot=meta["chip_snapshot"],
    )
    return ck, int(meta["generation"])


class Checkpointer:
    """Commits a run's checkpoints in ``directory``, numbered by generation.

    :meth:`save` first saves the chips' state beside it (``chips-<n>/``, when the backend
    can snapshot), then the arrays, then the commit record; only then are older
    generations removed.
    """

    def __init__(self, directory: Path, generation: int = 0) -> None:
        self.directory = directory
        self.generation = generation

    def save(self, ck: Checkpoint, snapshot: Callable[[Path], str | None]) -> None:
        """Commit ``ck`` as the next generation; ``snapshot(dest)`` saves the chips."""
        self.generation += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        dest = self.directory / f"chips-{self.generation:06d}"
        if dest.exists():  # an uncommitted snapshot of a crashed attempt
            shutil.rmtree(dest)
        ck.chip_snapshot = snapshot(dest)
        if ck.chip_snapshot is not None:
            fault_point("checkpoint.snapshot_written")
        save(self.directory, ck, self.generation)

    def load(self) -> Checkpoint | None:
        """The last committed checkpoint (None if there is none), after deleting what a
        crash left uncommitted; later saves continue its numbering."""
        if not (self.directory / STATE_FILE).is_file():
            shutil.rmtree(self.directory, ignore_errors=True)  # nothing was ever committed
            self.generation = 0
            return None
        ck, self.generation = load(self.directory)
        arrays = json.loads((self.directory / STATE_FILE).read_text())["arrays"]
        remove_stale(self.directory, arrays, ck.chip_snapshot)
        return ck
