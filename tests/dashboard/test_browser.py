"""The dashboard in a real browser: headless Debian chromium driven by Playwright.

Each test fails on any console error or uncaught page error. Set ``HIL_SCREENSHOT_DIR`` to
keep the screenshots (the README's are made with ``HIL_SCREENSHOT_DIR=docs/img``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import in_ci
from tests.dashboard.conftest import DASHBOARD_EXTRA, DashboardProcess
from tests.drivers.serve_proc import ServeProcess, wait_for
from tests.trainer.conftest import SMALL

pytest.importorskip("starlette", reason=DASHBOARD_EXTRA)
pytest.importorskip("uvicorn", reason=DASHBOARD_EXTRA)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs the 'browser' extra: pip install 'pcm-hil[browser]'"
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
DEADLINE_MS = 30_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        msg = f"{CHROMIUM} not found: apt-get install chromium (.ci/run installs it)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A 1280-px page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(DEADLINE_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def shot(self, tmp_path: Path, name: str, full_page: bool = True) -> None:
        path = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        keep = os.environ.get("HIL_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)

    def done(self) -> None:
        """Leave the page (its polling stops) and check that it logged no error."""
        self.page.goto("about:blank")
        assert self.errors == [], self.errors


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.page.close()


def _points(page: Any) -> int:
    return int(
        page.evaluate(
            "() => { const d = document.getElementById('curves').data;"
            " return d && d.length ? d[0].x.length : 0; }"
        )
    )


def test_overview_lists_runs_and_sorts_them(page: Page, runs_root: Path, tmp_path: Path) -> None:
    with DashboardProcess(["--runs", str(runs_root), "--refresh", "0.5"]) as dash:
        p = page.page
        p.goto(dash.url + "/")
        p.wait_for_selector("#runs tbody tr[data-run='0/soft']")
        assert p.locator("#runs tbody tr").count() == 2
        assert p.locator("tr[data-run='0/chip'] .badge").inner_text() == "finished"
        p.click("th[data-key='name']")  # sort by run name, ascending
        names = p.locator("#runs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.run)")
        assert names == ["0/chip", "0/soft"]
        p.click("th[data-key='name']")  # and descending
        p.wait_for_function(
            "() => document.querySelector('#runs tbody tr').dataset.run === '0/soft'"
        )
        p.check("input[data-run='0/soft']")
        p.check("input[data-run='0/chip']")
        p.click("#compare-btn")
        p.wait_for_url("**/compare?run=*")
        p.wait_for_function("() => document.getElementById('curves').data?.length === 2")
        page.done()


def test_a_run_training_in_a_subprocess_grows_without_a_reload(
    page: Page, runs_root: Path, tmp_path: Path, jsb_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    args = [sys.executable, "-m", "hil", "--log-level", "warning", "train"]
    args += [str(REPO / "configs/jsb_osttp_hil.yaml"), "--device", "software"]
    args += ["--epochs", "400", "--run-dir", str(live / "run"), "--no-progress"]
    for o in (*SMALL, f"data.path={jsb_path}", "train.max_train_sequences=24"):
        args += ["--set", o]
    dash = DashboardProcess(["--runs", str(runs_root), "--runs", str(live), "--refresh", "0.5"])
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as train:
        try:
            with dash:
                assert wait_for(lambda: (live / "run" / "metrics.jsonl").exists(), 120, 0.05)
                p = page.page
                p.goto(dash.url + "/")
                p.wait_for_selector("tr[data-run='1/run'][data-status='running']")
                page.shot(tmp_path, "dashboard-overview", full_page=False)
                p.click("tr[data-run='1/run'] a")
                p.wait_for_url("**/run/1/run")
                p.evaluate("() => { window.__sameDocument = true; }")
                p.wait_for_function("() => document.getElementById('curves').data")
                start = _points(p)
                assert start >= 1
                p.wait_for_function(
                    f"() => document.getElementById('curves').data[0].x.length >= {start + 2}"
                )
                assert p.evaluate("() => window.__sameDocument") is True  # no reload happened
                rows = p.locator("#epochs tbody tr").count()
                assert rows >= start + 2
                assert p.locator("#status .badge").inner_text() == "running"
                page.shot(tmp_path, "dashboard-run-live", full_page=False)
                train.send_signal(signal.SIGINT)  # stop at a batch boundary, with a checkpoint
                assert train.wait(60) == 130
                p.wait_for_function(
                    "() => document.querySelector('#status .badge').textContent === 'stopped'"
                )
                page.done()
        finally:
            train.kill()


def test_run_page_shows_curves_programming_conductances_and_events(
    page: Page, runs_root: Path, tmp_path: Path
) -> None:
    with DashboardProcess(["--runs", str(runs_root)]) as dash:
        p = page.page
        p.goto(dash.url + "/run/0/chip")
        p.wait_for_function("() => document.getElementById('curves').data?.length === 3")
        p.wait_for_selector("#programming-table tbody tr")
        assert p.locator("#programming-table tbody tr").count() == 3
        p.wait_for_selector("#matrices .js-plotly-plot")
        heatmaps = p.evaluate(
            "() => [...document.querySelectorAll('#matrices .js-plotly-plot')]"
            ".filter(d => d.data[0].type === 'heatmap').length"
        )
        assert heatmaps == 3
        assert "finished" in p.locator("#events").inner_text()
        assert "optim.lr" in p.locator("#config").inner_text()
        page.shot(tmp_path, "dashboard-run")
        page.done()


def test_compare_two_runs(page: Page, runs_root: Path, tmp_path: Path) -> None:
    with DashboardProcess(["--runs", str(runs_root)]) as dash:
        p = page.page
        p.goto(dash.url + "/compare?run=0/soft&run=0/chip")
        p.wait_for_function("() => document.getElementById('curves').data?.length === 2")
        differing = p.locator("#differing").inner_text()
        assert "optim.lr" in differing and "device.url" in differing
        p.select_option("#split", "test")
        names = p.evaluate("() => document.getElementById('curves').data.map(t => t.name)")
        assert names == ["soft (test nll)", "chip (test nll)"]
        p.uncheck("#picker input[data-run='0/chip']")
        p.wait_for_function("() => document.getElementById('curves').data.length === 1")
        assert p.url.endswith("/compare?run=0%2Fsoft")
        p.check("#picker input[data-run='0/chip']")
        p.wait_for_function("() => document.getElementById('curves').data.length === 2")
        page.shot(tmp_path, "dashboard-compare")
        page.done()


def test_devices_page_against_a_live_hil_serve(page: Page, runs_root: Path, tmp_path: Path) -> None:
    with ServeProcess("sim://?preset=hermes&seed=0", "tcp://127.0.0.1:*") as srv:
        args = ["--runs", str(runs_root), "--device", srv.endpoint, "--refresh", "0.5"]
        with DashboardProcess(args) as dash:
            p = page.page
            p.goto(dash.url + "/devices")
            card = p.locator(f"[data-device='{srv.endpoint}']")
            card.locator(".badge.st-ok").wait_for()
            text = card.inner_text()
            assert "hermes" in text or "status" in text
            first = p.locator("#updated").inner_text()
            p.wait_for_function(
                f"() => document.getElementById('updated').textContent !== {first!r}"
            )  # it refreshes by itself
            page.shot(tmp_path, "dashboard-devices")
            page.done()


def test_the_report_a_run_writes_is_the_run_page_and_fetches_nothing(
    page: Page, runs_root: Path, tmp_path: Path
) -> None:
    report = runs_root / "chip" / "report.html"  # written by the trainer at the end
    requests: list[str] = []
    p = page.page
    p.on("request", lambda r: requests.append(r.url))
    p.goto(report.as_uri())
    p.wait_for_function("() => document.getElementById('curves').data?.length === 3")
    p.wait_for_selector("#matrices .js-plotly-plot")
    assert p.locator("#programming-table tbody tr").count() == 3
    assert p.locator("#epochs tbody tr").count() == 3
    assert p.locator("#status .badge").inner_text() == "finished"
    assert "optim.lr" in p.locator("#config").inner_text()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    # what an operator reads (#13): rounded numbers with units, programming quality
    # against its tolerance and cap, pulse and refresh counts, nothing wider than the page
    heads = p.locator("#programming-table thead th").all_inner_texts()
    for col in ("rms error µS", "tolerance µS", "iter. / cap", "cells in tol.", "converged"):
        assert any(h.startswith(col) for h in heads), heads
    facts = p.locator("#facts").inner_text()
    assert "SET pulses" in facts and "refreshed cells" in facts and " s" in facts
    shown = " ".join(
        p.locator(sel).inner_text() for sel in ("#facts", "#epochs", "#programming-table")
    )
    long = [
        x
        for x in re.findall(r"\d+\.\d+", shown)
        if len(x.replace(".", "").lstrip("0")) > 4  # at most 4 significant digits
    ]
    assert long == [], long
    assert p.evaluate("document.documentElement.scrollWidth") <= 1280
    too_wide = p.evaluate(
        "Array.from(document.querySelectorAll('.card'))"
        ".filter(e => e.getBoundingClientRect().right > 1280).length"
    )
    assert too_wide == 0
    page.shot(tmp_path, "report")
    page.done()
