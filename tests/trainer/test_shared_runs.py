"""Several `hil train` processes sharing one `hil serve`: server-allocated reservations,
the FIFO queue and `--no-wait`, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers.remote import RemoteDriver
from hil.trainer.runs import RunDir, without_timing
from hil.trainer.session import TrainRequest, train
from protocols.messages import MatrixWant
from tests.drivers.serve_proc import ServeProcess

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/jsb_osttp_hil.yaml")


def _args(overrides: tuple[str, ...], seed: int, extra: tuple[str, ...] = ()) -> list[str]:
    args = [sys.executable, "-m", "hil", "--log-level", "warning", "train", CONFIG]
    args += ["--epochs", "1", "--no-progress", "--seed", str(seed), *extra]
    for s in overrides:
        args += ["--set", s]
    return args


def _start(args: list[str], url: str, run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*args, "--device", url, "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _whole(d: RemoteDriver) -> list[MatrixWant]:
    """Every chip of the device, whole."""
    info = d.info()
    return [
        MatrixWant(name=f"chip{c}", rows=info.rows, cols=info.cols, chip=c, whole_chip=True)
        for c in range(info.chips)
    ]


def _finish(p: subprocess.Popen[str], timeout: float = 600) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return err


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_three_runs_share_an_ideal_server_and_each_equals_itself_alone(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    sim = "sim://?preset=ideal&seed=0"
    with ServeProcess(sim, "tcp://127.0.0.1:*", log_path=tmp_path / "serve.log") as srv:
        # all three queue behind a holder of the whole device, then start together
        holder = RemoteDriver(srv.endpoint, client_name="holder")
        try:
            holder.reserve("gate", _whole(holder))
            url = f"{srv.endpoint}?poll_s=0.02"  # queued runs start within ms of each other
            procs = {
                seed: _start(_args(small_overrides, seed), url, tmp_path / f"shared{seed}")
                for seed in (1, 2, 3)
            }
            deadline = time.monotonic() + 300
            while len(holder.status()["queue"]) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(holder.status()["queue"]) == 3
            holder.release_reservation("gate")
            for p in procs.values():
                _finish(p)
            status = holder.status()
        finally:
            holder.close()
    assert status["reservations"] == [] and status["queue"] == []  # all released at the end
    regions, held = [], {}
    for seed in (1, 2, 3):
        shared = RunDir.open(tmp_path / f"shared{seed}")
        rec = json.loads((shared.path / "reservation.json").read_text())
        regions += [(seed, r) for r in rec["regions"].values()]
        times = {e["event"]: e["time"] for e in shared.events()}
        held[seed] = (times["start"], times["reservation_released"])
        alone = tmp_path / f"alone{seed}"
        train(
            TrainRequest(
                device=sim, run_dir=alone, epochs=1, seed=seed, overrides=small_overrides,
                progress=False,
            )
        )  # fmt: skip
        assert without_timing(shared.metrics()) == without_timing(RunDir.open(alone).metrics())
    # runs that held their reservations at the same time got disjoint regions from the
    # server (not all from row 0); the gate makes at least two of them overlap in time
    from protocols.region import Region

    def together(a: int, b: int) -> bool:
        return held[a][0] < held[b][1] and held[b][0] < held[a][1]

    assert any(together(a, b) for a, b in ((1, 2), (1, 3), (2, 3))), held
    for i, (sa, a) in enumerate(regions):
        for sb, b in regions[i + 1 :]:
            if sa != sb and together(sa, sb):
                assert not Region.model_validate(a).overlaps(Region.model_validate(b))


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_run_that_does_not_fit_waits_in_the_queue_or_refuses_with_no_wait(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    sim = "sim://?preset=ideal&seed=0"
    with ServeProcess(sim, "tcp://127.0.0.1:*", log_path=tmp_path / "serve.log") as srv:
        holder = RemoteDriver(srv.endpoint, client_name="holder")
        try:
            holder.reserve("everything", _whole(holder))
            refused = subprocess.run(
                [
                    *_args(small_overrides, 1, ("--no-wait",)),
                    "--device",
                    srv.endpoint,
                    "--run-dir",
                    str(tmp_path / "refused"),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert refused.returncode != 0
            lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1, refused.stderr
            assert "everything" in lines[0] and "--no-wait" in lines[0]
            assert not (tmp_path / "refused").exists()  # a refused run leaves nothing behind
            waiting = _start(_args(small_overrides, 1), srv.endpoint, tmp_path / "waited")
            deadline = time.monotonic() + 120
            queued = []
            while not queued and time.monotonic() < deadline:
                queued = holder.status()["queue"]
                time.sleep(0.2)
            assert queued and queued[0]["position"] == 1 and waiting.poll() is None
            assert not (tmp_path / "waited").exists()
            holder.release_reservation("everything")
            err = _finish(waiting)
            assert "waiting for chip" in err and "position 1" in err
        finally:
            holder.close()
    assert RunDir.open(tmp_path / "waited").summary() is not None


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_a_hermes_run_on_a_region_equals_itself_alone_while_two_others_train_beside_it(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    """Tenant isolation: each reservation draws its noise from its own stream (server
    seed, region, run seed) on its own clock, so the neighbours change nothing."""
    sim = "sim://?preset=hermes&seed=3"
    anchors = {1: "[0,0,0]", 2: "[0,100,0]", 3: "[1,0,0]"}
    with ServeProcess(sim, "tcp://127.0.0.1:*", log_path=tmp_path / "serve.log") as srv:
        holder = RemoteDriver(srv.endpoint, client_name="holder")  # a gate: start together
        try:
            holder.reserve("gate", _whole(holder))
            procs = {
                seed: _start(
                    _args((*small_overrides, f"device.region={anchor}"), seed),
                    srv.endpoint,
                    tmp_path / f"shared{seed}",
                )
                for seed, anchor in anchors.items()
            }
            deadline = time.monotonic() + 300
            while len(holder.status()["queue"]) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            holder.release_reservation("gate")
            for p in procs.values():
                _finish(p)
        finally:
            holder.close()
    for seed in (1, 2):
        alone = tmp_path / f"alone{seed}"
        train(
            TrainRequest(
                device=sim, run_dir=alone, epochs=1, seed=seed, progress=False,
                overrides=(*small_overrides, f"device.region={anchors[seed]}"),
            )
        )  # fmt: skip
        shared = RunDir.open(tmp_path / f"shared{seed}").metrics()
        assert without_timing(shared) == without_timing(RunDir.open(alone).metrics())
        rec = json.loads((tmp_path / f"shared{seed}" / "reservation.json").read_text())
        chip, row, col = json.loads(anchors[seed])
        assert min((r["chip"], r["row0"], r["col0"]) for r in rec["regions"].values()) == (
            chip,
            row,
            col,
        )


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_resume_on_a_server_takes_its_reservation_back_and_checks_the_weights(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    """kill -9 after the last checkpoint: --resume is the same client (its session token),
    takes its reservation back and checks the chip still holds its weights; after the
    reservation lapsed and another run wrote there, --resume refuses in one line."""
    import numpy as np

    sim = "sim://?preset=hermes&seed=5"
    extra = ["--reservation-ttl", "2"]
    env = {**__import__("os").environ, "HIL_FAULT": "run.trained"}
    with ServeProcess(sim, "tcp://127.0.0.1:*", extra, tmp_path / "serve.log") as srv:
        for name in ("kept", "lost"):
            run = tmp_path / name
            p = subprocess.run(
                [*_args(small_overrides, 1), "--device", srv.endpoint, "--run-dir", str(run)],
                capture_output=True, text=True, timeout=300, env=env,
            )  # fmt: skip
            assert p.returncode != 0 and (run / "checkpoint").is_dir()
            assert (run / "session.token").stat().st_mode & 0o077 == 0  # a secret: 0600
        regions = json.loads((tmp_path / "lost" / "reservation.json").read_text())["regions"]
        # "kept": resumed at once, its reservation still held: continues and finishes
        resumed = subprocess.run(
            [sys.executable, "-m", "hil", "--log-level", "warning", "train", "--resume",
             "--run-dir", str(tmp_path / "kept"), "--epochs", "2", "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        events = [
            json.loads(x) for x in (tmp_path / "kept" / "events.jsonl").read_text().splitlines()
        ]
        checked = [e for e in events if e["event"] == "fingerprint_checked"]
        assert checked and all(r >= 0.9 for r in checked[-1]["correlation"].values())
        # "lost": its reservation lapses (nobody speaks for it); another run overwrites it
        other = RemoteDriver(srv.endpoint, client_name="other")
        try:
            from protocols.region import Region

            wants = [
                MatrixWant(name=k, rows=r["row1"] - r["row0"], cols=r["col1"] - r["col0"],
                           region=Region.model_validate(r))
                for k, r in regions.items()
            ]  # fmt: skip
            other.reserve("intruder", wants)  # waits until the crashed run's TTL ran out
            for w in wants:
                assert w.region is not None
                other.program(w.region, np.zeros(w.region.shape, np.float32),
                              tolerance_us=0.5, max_iterations=5)  # fmt: skip
            other.release_reservation("intruder")
        finally:
            other.close()
        refused = subprocess.run(
            [sys.executable, "-m", "hil", "--log-level", "warning", "train", "--resume",
             "--run-dir", str(tmp_path / "lost"), "--epochs", "2", "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert refused.returncode != 0
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no longer holds this run's weights" in lines[0], refused.stderr
