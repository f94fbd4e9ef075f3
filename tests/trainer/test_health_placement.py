"""A chip with injected faults: ``hil health`` marks them, the server keeps the report,
and a short training run on that server places its matrices around them and records it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import simulator
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from drivers.sim import SimDriver
from hil.characterize.health import HealthReport
from hil.cli import main
from hil.dashboard.rundata import health_summary
from hil.errors import ConfigError
from hil.trainer.config import load_config
from hil.trainer.model import matrix_shapes
from hil.trainer.session import TrainRequest, build_backend, train
from protocols.messages import MatrixWant
from protocols.region import Region

REPO = Path(__file__).resolve().parents[2]
BAD_ROW, BAD_COL = 3, 10
STUCK = {(r, c) for r in range(2, 6) for c in range(1, 5)}  # chip 1, near the top left


def _faulty_driver() -> SimDriver:
    """hermes without random faults, plus a broken word line and bit line on chip 0 and a
    cluster of stuck-at-g_max devices on chip 1."""
    params = simulator.get_preset("hermes").replace(p_stuck_reset=0, p_stuck_gmax=0, p_dead=0)
    drv = SimDriver("hermes", seed=3)
    drv.chips = [simulator.Chip(c, params, seed=3) for c in range(2)]
    pop0, pop1 = drv.chips[0]._pop, drv.chips[1]._pop
    pop0.arrays["fault"][BAD_ROW, :, 0] = 3  # dead
    pop0.arrays["g_prog_us"][BAD_ROW, :, 0] = 0.0
    pop0.arrays["fault"][:, BAD_COL, 2] = 3
    pop0.arrays["g_prog_us"][:, BAD_COL, 2] = 0.0
    for r, c in STUCK:
        pop1.arrays["fault"][r, c, 1] = 2  # stuck at g_max
        pop1.arrays["g_prog_us"][r, c, 1] = pop1.arrays["g_max_us"][r, c, 1]
    pop0._healthy_mask = pop1._healthy_mask = None  # recomputed from the fault codes
    return drv


@contextmanager
def _served(driver: SimDriver, tmp_path: Path) -> Iterator[str]:
    server = DeviceServer(driver, f"ipc://{tmp_path}/faulty.sock")
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield server.bound[0]
    finally:
        server.stop()
        thread.join(10)


def _inside(r: Region, cell: tuple[int, int]) -> bool:
    return r.row0 <= cell[0] < r.row1 and r.col0 <= cell[1] < r.col1


def test_a_run_places_around_what_hil_health_marked_bad(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    drv = _faulty_driver()
    with _served(drv, tmp_path) as url:
        scan = ["--log-level", "warning", "health", url, "--region", "0:96,0:96", "--json"]
        assert main([*scan, "--out", str(tmp_path / "health")]) == 0
        latest = tmp_path / "health" / "latest.json"  # stdout also holds the server's log
        report = HealthReport.model_validate_json(latest.read_text())
        assert report.bad_rows(0) == {BAD_ROW} and report.bad_cols(0) == {BAD_COL}
        assert report.bad_rows(1) == set() and report.bad_cols(1) == set()
        assert report.bad_cells(1) == STUCK
        assert drv.health_report() == report.model_dump(mode="json")  # the server keeps it

        train(
            TrainRequest(
                config=REPO / "configs/jsb_osttp_hil.yaml",
                device=url,
                run_dir=tmp_path / "run",
                epochs=1,
                overrides=small_overrides,
                progress=False,
            )
        )
    record = json.loads((tmp_path / "run" / "placement.json").read_text())
    regions = {k: Region.model_validate(v) for k, v in record["regions"].items()}
    assert {k: r.chip for k, r in regions.items()} == {"h0.W": 0, "out.W": 0, "B0": 1}
    for name in ("h0.W", "out.W"):
        r = regions[name]
        assert not r.row0 <= BAD_ROW < r.row1 and not r.col0 <= BAD_COL < r.col1, (name, r)
    assert not any(_inside(regions["B0"], c) for c in STUCK)
    health = record["health"]
    assert health["source"] == "device" and health["created"] == report.created
    assert health["avoided"]["0"]["bad_rows"] == [BAD_ROW]
    assert health["avoided"]["0"]["bad_cols"] == [BAD_COL]
    assert {tuple(c) for c in health["avoided"]["1"]["bad_cells"]} == STUCK
    assert health["bad_cells_inside"] == {}
    shown = health_summary(health)  # the run page's device panel
    assert shown is not None and shown["chip 0 bad rows avoided"] == [BAD_ROW]
    assert shown["chip 1 bad cells avoided"] == len(STUCK) and shown["report"] == "device"

    # without the report, the same network lands on the bad lines (the avoidance is real)
    cfg = load_config(REPO / "configs/jsb_osttp_hil.yaml", [*small_overrides, "device.health=none"])
    plain = _faulty_driver()
    with _served(plain, tmp_path) as url:
        cfg = cfg.model_copy(update={"device": cfg.device.model_copy(update={"url": url})})
        backend = build_backend(cfg, "plain")
        try:
            naive = backend.place(matrix_shapes(cfg))
            assert backend.health_record() == {"source": "none"}  # type: ignore[attr-defined]
        finally:
            backend.close()
    assert naive["h0.W"].row0 <= BAD_ROW < naive["h0.W"].row1
    assert any(_inside(naive["B0"], c) for c in STUCK)


def test_a_report_file_is_validated_at_the_boundary(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "pcm-hil-health"}')
    cfg = load_config(
        REPO / "configs/jsb_osttp_hil.yaml", [*small_overrides, f"device.health={bad}"]
    )
    with pytest.raises(ConfigError, match=r"device.health=.*bad.json: not a hil health report"):
        build_backend(cfg, "x")
    missing = tmp_path / "missing.json"
    cfg = load_config(
        REPO / "configs/jsb_osttp_hil.yaml", [*small_overrides, f"device.health={missing}"]
    )
    with pytest.raises(ConfigError, match="cannot read the report"):
        build_backend(cfg, "x")


def test_a_resumed_run_keeps_its_regions_when_a_newer_report_marks_them_bad(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    drv = _faulty_driver()
    run_dir = tmp_path / "run"
    with _served(drv, tmp_path) as url:
        assert main(["--log-level", "warning", "health", url, "--region", "0:96,0:96",
                     "--out", str(tmp_path / "health")]) == 0  # fmt: skip
        req = dict(device=url, run_dir=run_dir, overrides=small_overrides, progress=False)
        train(TrainRequest(config=REPO / "configs/jsb_osttp_hil.yaml", epochs=1, **req))  # type: ignore[arg-type]
        first = json.loads((run_dir / "placement.json").read_text())
        used = Region.model_validate(first["regions"]["h0.W"])
        newer = HealthReport.model_validate(drv.health_report())
        marked = newer.chips[0].model_copy(update={"bad_rows": [used.row0, used.row0 + 1]})
        drv.keep_health_report(
            newer.model_copy(update={"chips": [marked, *newer.chips[1:]]}).model_dump(mode="json")
        )
        # a new run avoids the newly marked rows (and the first run's cells, which an
        # operator holds for it meanwhile: a finished run released them, and a run that
        # overwrote them would make the resume below refuse, rightly) ...
        fresh_dir = tmp_path / "fresh"
        fresh = dict(req, run_dir=fresh_dir)
        with RemoteDriver(url) as guard:
            guard.reserve("keep-first", [
                MatrixWant(name=k, rows=r["row1"] - r["row0"], cols=r["col1"] - r["col0"],
                           region=Region.model_validate(r))
                for k, r in first["regions"].items()
            ])  # fmt: skip
            train(TrainRequest(config=REPO / "configs/jsb_osttp_hil.yaml", epochs=1, **fresh))  # type: ignore[arg-type]
            guard.release_reservation("keep-first")
        moved = Region.model_validate(
            json.loads((fresh_dir / "placement.json").read_text())["regions"]["h0.W"]
        )
        assert not moved.row0 <= used.row0 < moved.row1
        # ... but the resumed run goes on where its weights are
        t0 = time.time()
        train(TrainRequest(run_dir=run_dir, resume=True, epochs=2, progress=False, device=url))
        with RemoteDriver(url) as remote:
            rows = [r for r in remote.audit(since=t0) if r["verb"] == "apply_pulses"]
    keys = ("chip", "row0", "row1", "col0", "col1")
    placed = {tuple(r[k] for k in keys) for r in rows}
    recorded = {tuple(r[k] for k in keys) for r in first["regions"].values()}
    assert rows and placed <= recorded, (placed, recorded)
    assert json.loads((run_dir / "placement.json").read_text()) == first
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
