"""Every endpoint of the dashboard app, through an ASGI test client, on real run directories."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.dashboard.conftest import DASHBOARD_EXTRA, EPOCHS, DashboardProcess
from tests.drivers.serve_proc import ServeProcess

pytest.importorskip("starlette", reason=DASHBOARD_EXTRA)
pytest.importorskip("httpx2", reason=DASHBOARD_EXTRA)

from starlette.testclient import TestClient  # noqa: E402

from hil.dashboard.app import create_app  # noqa: E402
from hil.trainer.runs import RunDir  # noqa: E402
from hil.trainer.status import RunLock  # noqa: E402


def client(runs: Path, *, raise_errors: bool = True, **kw: object) -> TestClient:
    return TestClient(create_app([runs], **kw), raise_server_exceptions=raise_errors)  # type: ignore[arg-type]


def test_overview_lists_every_run_with_status_progress_and_best_metric(runs_root: Path) -> None:
    with client(runs_root) as c:
        body = c.get("/api/runs").json()
    rows = {r["id"]: r for r in body["runs"]}
    assert set(rows) == {"0/soft", "0/chip"}
    for r in rows.values():
        assert r["status"] == "finished" and r["task"] == "jsb" and r["rule"] == "osttp"
        assert (r["epochs_done"], r["epochs_total"]) == (EPOCHS, EPOCHS)
        assert 1 <= r["best"]["epoch"] <= EPOCHS and r["best"]["valid"] > 0
        assert r["metric"] == "nll"
        assert r["data_source"].startswith("jsb-standard:") and r["started"] > 0
        assert r["warnings"] == []
    assert rows["0/chip"]["device"] == "sim://?preset=ideal&seed=0"
    assert rows["0/soft"]["device"] == "software"
    summary = json.loads((runs_root / "chip" / "summary.json").read_text())
    assert rows["0/chip"]["best"]["valid"] == summary["best_valid_nll"]
    assert rows["0/chip"]["best"]["epoch"] == summary["best_epoch"]


def test_run_detail_has_config_summary_programming_and_placement(runs_root: Path) -> None:
    with client(runs_root) as c:
        d = c.get("/api/runs/0/chip").json()
    assert d["config"]["optim"]["lr"] == 0.02
    assert d["summary"]["epochs"] == EPOCHS
    assert set(d["programming"]) == {"h0.W", "B0", "out.W"} == set(d["placement"])
    assert d["device_info"]["info"]["preset"] == "ideal"
    assert d["health"] == {"report": "device (none kept)"}  # no hil health on this chip
    assert d["drift"] is None


def test_metrics_and_events_follow_from_an_offset(runs_copy: Path) -> None:
    with client(runs_copy) as c:
        first = c.get("/api/runs/0/soft/metrics?since=0").json()
        assert first["total"] == EPOCHS and not first["reset"]
        assert [r["epoch"] for r in first["records"]] == list(range(1, EPOCHS + 1))
        assert c.get(f"/api/runs/0/soft/metrics?since={EPOCHS}").json()["records"] == []
        # a resume rewrites metrics.jsonl from the checkpoint: fewer records than the client has
        again = c.get(f"/api/runs/0/soft/metrics?since={EPOCHS + 5}").json()
        assert again["reset"] and len(again["records"]) == EPOCHS
        with open(runs_copy / "soft" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": EPOCHS + 1, "valid_nll": 1.0}) + "\n")
        grown = c.get(f"/api/runs/0/soft/metrics?since={EPOCHS}").json()
        assert [r["epoch"] for r in grown["records"]] == [EPOCHS + 1]
        assert grown["total"] == EPOCHS + 1
        events = c.get("/api/runs/0/soft/events?since=0").json()
        assert [e["event"] for e in events["records"]][0] == "start"
        assert events["records"][-1]["event"] == "finished" and events["status"] == "finished"
        assert c.get("/api/runs/0/soft/metrics?since=x").status_code == 400


def test_matrices_of_a_chip_run_and_none_for_software(runs_copy: Path) -> None:
    with client(runs_copy) as c:
        chip = c.get("/api/runs/0/chip/matrices").json()
        soft = c.get("/api/runs/0/soft/matrices").json()
        assert soft["matrices"] == {} and soft["latest"] is None
        assert chip["latest"] == "after training" and set(chip["matrices"]) == {
            "h0.W",
            "B0",
            "out.W",
        }
        w = chip["matrices"]["h0.W"]
        rows, cols = 88, 24  # JSB keys in, hidden 24 out
        assert len(w["heatmap_us"]) == rows and len(w["heatmap_us"][0]) == cols
        assert sum(w["hist"]["before"]) == sum(w["hist"]["latest"]) == rows * cols * 4
        assert len(w["programming"]["target"]) == len(w["programming"]["achieved"]) > 0
        # while a run trains there is no conductances_after.npz: the checkpoint's chips serve
        (runs_copy / "chip" / "conductances_after.npz").unlink()
        live = c.get("/api/runs/0/chip/matrices").json()
        assert live["latest"].startswith(f"checkpoint after epoch {EPOCHS}")
        assert sum(live["matrices"]["B0"]["hist"]["latest"]) == rows * cols * 4


def test_compare_overlays_runs_and_lists_differing_config_keys(runs_root: Path) -> None:
    with client(runs_root) as c:
        body = c.get("/api/compare?run=0/soft&run=0/chip&run=0/nope").json()
    assert [r["id"] for r in body["runs"]] == ["0/soft", "0/chip"]
    assert all(len(r["metrics"]) == EPOCHS for r in body["runs"])
    assert body["differing"]["optim.lr"] == [0.01, 0.02]
    assert body["differing"]["device.url"] == ["software", "sim://?preset=ideal&seed=0"]
    assert "network.hidden" not in body["differing"]
    assert body["missing"] == ["0/nope"]


def test_pages_render_and_plotly_is_served_by_the_app(runs_root: Path) -> None:
    with client(runs_root) as c:
        for path in ("/", "/run/0/chip", "/compare?run=0/soft", "/devices"):
            r = c.get(path)
            assert r.status_code == 200 and r.text.startswith("<!doctype html>")
            assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN
        js = c.get("/static/plotly.min.js")
        assert js.status_code == 200 and b"plotly.js" in js.content[:200]
        for name in ("common.js", "overview.js", "run.js", "compare.js", "devices.js"):
            assert c.get(f"/static/{name}").status_code == 200
        assert '"0/chip"' in c.get("/run/0/chip").text


@pytest.mark.parametrize(
    "path",
    [
        "/run/0/nope",
        "/run/7/soft",
        "/api/runs/0/nope",
        "/api/runs/0/%2E%2E",
        "/api/runs/0/%2E%2E%2Fsoft",
        "/api/runs/0/soft/config",
        "/static/..%2Fapp.py",
        "/static/nope.js",
    ],
)
def test_unknown_runs_and_files_are_404(runs_root: Path, path: str) -> None:
    with client(runs_root) as c:
        assert c.get(path).status_code == 404


def test_bad_run_files_are_warnings_never_a_500(runs_copy: Path) -> None:
    soft, chip = runs_copy / "soft", runs_copy / "chip"
    with open(soft / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_n')  # a torn last line
    (chip / "metrics.jsonl").unlink()
    (chip / "summary.json").unlink()
    (chip / "placement.json").write_text("{not json")
    (chip / "conductances_before.npz").write_bytes(b"garbage")
    broken = runs_copy / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("[1, 2")
    with client(runs_copy, raise_errors=False) as c:
        rows = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
        assert any("incomplete" in w for w in rows["0/soft"]["warnings"])
        assert rows["0/soft"]["epochs_done"] == EPOCHS
        assert any("metrics.jsonl is missing" in w for w in rows["0/chip"]["warnings"])
        assert any("config.json cannot be read" in w for w in rows["0/broken"]["warnings"])
        for path in (
            "/api/runs/0/soft",
            "/api/runs/0/soft/metrics",
            "/api/runs/0/chip",
            "/api/runs/0/chip/metrics",
            "/api/runs/0/chip/matrices",
            "/api/runs/0/broken",
            "/api/runs/0/broken/events",
            "/api/runs/0/broken/matrices",
            "/api/compare?run=0/chip&run=0/broken",
            "/run/0/broken",
        ):
            assert c.get(path).status_code == 200, path
        detail = c.get("/api/runs/0/chip").json()
        assert any("placement.json cannot be read" in w for w in detail["warnings"])
        mats = c.get("/api/runs/0/chip/matrices").json()
        assert any("conductances_before.npz" in w for w in mats["warnings"])


def test_a_training_run_shows_as_running(runs_copy: Path) -> None:
    RunDir(runs_copy / "soft").event("resume", epoch=EPOCHS, epochs=EPOCHS + 2)
    with RunLock(runs_copy / "soft"), client(runs_copy) as c:
        rows = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
        assert rows["0/soft"]["status"] == "running"
        assert rows["0/soft"]["epochs_total"] == EPOCHS + 2  # a resume that extends the run


def test_the_token_is_checked_on_every_request(runs_root: Path) -> None:
    token = "s3cret-token-0123456789"
    with client(runs_root, token=token) as c:
        for path in ("/", "/api/runs", "/static/common.js", "/api/devices"):
            r = c.get(path)
            assert r.status_code == 401 and "token" in r.text
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/runs", headers=auth).status_code == 200
        assert c.get(f"/?token={token}").status_code == 200  # sets the cookie ...
        assert c.get("/api/runs").status_code == 200  # ... which the page's requests carry


def test_a_loopback_bind_refuses_foreign_host_names(runs_root: Path) -> None:
    with client(runs_root, allowed_hosts=["127.0.0.1", "localhost"]) as c:
        assert c.get("/api/runs", headers={"Host": "evil.example:8765"}).status_code == 400
        assert c.get("/api/runs", headers={"Host": "127.0.0.1:8765"}).status_code == 200


def test_devices_show_info_of_a_live_server_and_a_dead_one_as_down(
    runs_root: Path, tmp_path: Path
) -> None:
    dead = f"ipc://{tmp_path}/nobody-serves-here"
    with ServeProcess("sim://?preset=ideal&seed=3", "tcp://127.0.0.1:*") as srv:
        with client(runs_root, devices=[srv.endpoint, dead]) as c:
            for _ in range(2):  # the second poll reuses the connection
                live, down = c.get("/api/devices").json()["devices"]
                assert live["ok"] and live["url"] == srv.endpoint
                assert live["kind"] in ("status", "info")
                if live["kind"] == "info":
                    assert live["data"]["info"]["preset"] == "ideal"
                    assert live["data"]["info"]["chips"] == 2
                    assert live["data"]["server"]["device_time_s"] >= 0
            assert not down["ok"] and "hil serve" in down["error"]  # the cause, in one line


def test_cli_refuses_an_exposed_bind_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli import main

    assert main(["dashboard", "--bind", "0.0.0.0:0"]) != 0
    err = capsys.readouterr().err
    assert "not a loopback address" in err and "--token" in err
    assert main(["dashboard", "--bind", "0.0.0.0:0", "--token", "short"]) != 0
    assert "at least 16 characters" in capsys.readouterr().err
    assert main(["dashboard", "--bind", "nope"]) != 0
    assert "HOST:PORT" in capsys.readouterr().err
    assert main(["dashboard", "--device", "sim://?preset=ideal"]) != 0
    assert "hil serve" in capsys.readouterr().err


def test_cli_serves_the_app_on_loopback_until_terminated(runs_root: Path) -> None:
    import httpx2

    with DashboardProcess(["--runs", str(runs_root)]) as dash:
        assert dash.url.startswith("http://127.0.0.1:")
        with httpx2.Client(base_url=dash.url, trust_env=False, timeout=10) as c:
            assert {r["id"] for r in c.get("/api/runs").json()["runs"]} == {"0/soft", "0/chip"}
            assert c.get("/api/runs", headers={"Host": "evil.example"}).status_code == 400
        assert dash.proc is not None
        dash.proc.send_signal(signal.SIGINT)
        assert dash.proc.wait(20) == 0


def test_a_missing_runs_dir_is_an_empty_overview(tmp_path: Path) -> None:
    with client(tmp_path / "later") as c:
        assert c.get("/api/runs").json()["runs"] == []
        assert c.get("/").status_code == 200
