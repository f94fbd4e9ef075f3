"""A run stopped at every named write point resumes without anyone deleting files.

For each fault point of :mod:`hil.faults`, a run is stopped there — by an injected abort
in-process at every point, and by ``kill -9`` of a ``hil train`` process at the points
where a kill differs most from an exception (mid-checkpoint, mid-atomic-write) — then
``hil train --resume`` (or, when the stop came before the run recorded its config, the
same ``hil train`` again) runs to the end. The metrics must equal an uninterrupted run's,
exactly, and the checkpoint folder must hold one committed generation and nothing
half-written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hil import faults
from hil.faults import FAULT_POINTS
from hil.fsio import append_jsonl, read_jsonl
from hil.trainer.runs import RunDir, without_timing
from hil.trainer.session import TrainRequest, train

REPO = Path(__file__).resolve().parents[2]
SIM = "sim://?preset=hermes&seed=2"
EPOCHS = 2

# (fault point@occurrence, device); the checkpoints of the run: 1 initial, then one per batch
# (2 batches per epoch, --checkpoint-every 1) plus one at each epoch's end
CASES = [
    ("run.created", SIM),
    ("run.config_written", SIM),
    ("run.data_recorded", SIM),
    ("run.device_recorded", SIM),
    ("run.programmed", SIM),
    ("checkpoint.snapshot_written", SIM),
    ("checkpoint.snapshot_written@3", SIM),
    ("checkpoint.arrays_written@3", SIM),
    ("checkpoint.committed@3", SIM),
    ("epoch.metrics_logged", SIM),
    ("run.trained", SIM),
    ("run.summary_written", SIM),
    ("fsio.temp_written@9", SIM),
    ("checkpoint.arrays_written", "software"),
    ("checkpoint.committed@4", "software"),
    ("epoch.metrics_logged@2", "software"),
]


KILL_CASES = [
    ("run.programmed", SIM),
    ("checkpoint.snapshot_written@3", SIM),
    ("checkpoint.arrays_written@3", SIM),
    ("fsio.temp_written@9", SIM),
]


def _args(sets: tuple[str, ...], run_dir: Path, device: str) -> list[str]:
    args = [sys.executable, "-m", "hil", "--log-level", "warning", "train"]
    args += [str(REPO / "configs/jsb_osttp_hil.yaml"), "--device", device]
    args += ["--epochs", str(EPOCHS), "--run-dir", str(run_dir), "--checkpoint-every", "1"]
    args += ["--no-progress"]
    for s in sets:
        args += ["--set", s]
    return args


def _hil(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, jsb_path: Path) -> dict:
    from tests.trainer.conftest import SMALL

    sets = (*SMALL, f"data.path={jsb_path}")
    out = {"sets": sets}
    for device in (SIM, "software"):
        run_dir = tmp_path_factory.mktemp("ref") / "run"
        train(
            TrainRequest(
                config=REPO / "configs/jsb_osttp_hil.yaml",
                device=device,
                run_dir=run_dir,
                epochs=EPOCHS,
                overrides=sets,
                progress=False,
                checkpoint_every=1,
            )
        )
        out[device] = without_timing(RunDir.open(run_dir).metrics())
    return out


def test_every_fault_point_is_tested() -> None:
    assert {c.partition("@")[0] for c, _ in CASES} == set(FAULT_POINTS)


def _check_finished(run_dir: Path, reference: list) -> None:
    run = RunDir.open(run_dir)
    assert without_timing(run.metrics()) == reference
    assert run.summary() is not None and run.report_file.exists()
    files = sorted(p.name for p in run.checkpoint_dir.iterdir())
    state = json.loads((run.checkpoint_dir / "state.json").read_text())
    expected = {"state.json", state["arrays"]} | (
        {state["chip_snapshot"]} if state["chip_snapshot"] else set()
    )
    assert set(files) == expected, files  # one committed generation, nothing stale
    assert not list(run.path.rglob(".*.tmp"))


@pytest.mark.parametrize(("point", "device"), CASES)
def test_abort_at_a_write_point_then_resume(
    tmp_path: Path, references: dict, point: str, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    req = TrainRequest(
        config=REPO / "configs/jsb_osttp_hil.yaml",
        device=device,
        run_dir=run_dir,
        epochs=EPOCHS,
        overrides=references["sets"],
        progress=False,
        checkpoint_every=1,
    )
    monkeypatch.setattr(faults, "_hits", Counter())
    monkeypatch.setenv("HIL_FAULT", point)
    monkeypatch.setenv("HIL_FAULT_ACTION", "abort")
    with pytest.raises(faults.InjectedFault):
        train(req)
    monkeypatch.delenv("HIL_FAULT")
    if (run_dir / "config.json").exists():
        train(TrainRequest(run_dir=run_dir, resume=True, progress=False))
    else:
        train(req)
    _check_finished(run_dir, references[device])


@pytest.mark.slow
@pytest.mark.parametrize(("point", "device"), KILL_CASES)
def test_kill_at_a_write_point_then_resume(
    tmp_path: Path, references: dict, point: str, device: str
) -> None:
    run_dir = tmp_path / "run"
    args = _args(references["sets"], run_dir, device)
    killed = _hil(args, HIL_FAULT=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    if (run_dir / "config.json").exists():
        again = _hil([*args[:6], "--resume", "--run-dir", str(run_dir), "--no-progress"])
    else:  # killed before the run recorded its config: --resume says what to do
        refused = _hil([*args[:6], "--resume", "--run-dir", str(run_dir), "--no-progress"])
        assert refused.returncode == 1 and "hil train CONFIG --run-dir" in refused.stderr
        again = _hil(args)
    assert again.returncode == 0, again.stderr[-3000:]
    _check_finished(run_dir, references[device])


def test_a_torn_log_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    append_jsonl(log, {"event": "start"})
    with open(log, "a") as f:
        f.write('{"event": "epo')  # a kill in the middle of an append
    assert [r["event"] for r in read_jsonl(log)] == ["start"]
    append_jsonl(log, {"event": "resume"})
    assert [r["event"] for r in read_jsonl(log)] == ["start", "resume"]


def test_loading_a_checkpoint_removes_what_a_crash_left_uncommitted(tmp_path: Path) -> None:
    import numpy as np

    from hil.trainer.checkpoint import Checkpoint, Checkpointer

    def snapshot(dest: Path) -> str:
        dest.mkdir()
        (dest / "chip0.npz").write_bytes(b"chips")
        return dest.name

    folder = tmp_path / "checkpoint"
    ck = Checkpoint(0, 0, [], {"w": np.zeros(2)}, {}, {"epoch": 0, "t": 0, "m": {}, "v": {}},
                    0, 0, [])  # fmt: skip
    Checkpointer(folder).save(ck, snapshot)
    (folder / "chips-000002").mkdir()  # a newer snapshot whose commit never came
    (folder / ".chips-000003.tmp").mkdir()  # a snapshot killed while being written
    (folder / "arrays-000002.npz").write_bytes(b"half")
    (folder / ".state.json.x1.tmp").write_text("{")
    loaded = Checkpointer(folder)
    assert loaded.load() is not None and loaded.generation == 1
    assert sorted(p.name for p in folder.iterdir()) == [
        "arrays-000001.npz",
        "chips-000001",
        "state.json",
    ]
    loaded.save(ck, snapshot)  # generation 2 is free again
    assert json.loads((folder / "state.json").read_text())["chip_snapshot"] == "chips-000002"
