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
        procs = {
            seed: _start(_args(small_overrides, seed), srv.endpoint, tmp_path / f"shared{seed}")
            for seed in (1, 2, 3)
        }
        for p in procs.values():
            _finish(p)
        with RemoteDriver(srv.endpoint) as d:
            status = d.status()
    assert status["reservations"] == [] and status["queue"] == []  # all released at the end
    regions = []
    for seed in (1, 2, 3):
        shared = RunDir.open(tmp_path / f"shared{seed}")
        rec = json.loads((shared.path / "reservation.json").read_text())
        regions += [(seed, r) for r in rec["regions"].values()]
        alone = tmp_path / f"alone{seed}"
        train(
            TrainRequest(
                device=sim, run_dir=alone, epochs=1, seed=seed, overrides=small_overrides,
                progress=False,
            )
        )  # fmt: skip
        assert without_timing(shared.metrics()) == without_timing(RunDir.open(alone).metrics())
    # the server allocated disjoint regions: no fixed packing from row 0 for all three
    from protocols.region import Region

    for i, (sa, a) in enumerate(regions):
        for sb, b in regions[i + 1 :]:
            if sa != sb:
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
            info = holder.info()
            whole = [
                MatrixWant(name=f"chip{c}", rows=info.rows, cols=info.cols, chip=c, whole_chip=True)
                for c in range(info.chips)
            ]
            holder.reserve("everything", whole)
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
