"""The conformance suite over every driver: SimDriver (ideal, hermes) in-process, and
RemoteDriver to a real ``hil serve`` subprocess over TCP loopback and ipc://.

Engineer D runs the same suite on the board: ``hil driver check board://setup.yaml`` or
``run_conformance(lambda: open_board(url))``; with ``pytest --device-url URL`` the
``hardware`` test below does it here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers import open_driver
from drivers.base import Driver
from drivers.conformance import REQUIREMENTS, Requirement, check_requirement, run_conformance
from drivers.remote import RemoteDriver
from drivers.sim import SimDriver
from tests.drivers.serve_proc import ServeProcess


@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "tcp.log"
    with ServeProcess("sim://?preset=hermes&seed=3", "tcp://127.0.0.1:*", log_path=log) as srv:
        yield srv.endpoint


@pytest.fixture(scope="module")
def ipc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("ipc")
    with ServeProcess("sim://?preset=ideal", f"ipc://{d}/dev.sock", log_path=d / "s.log") as srv:
        yield srv.endpoint


DRIVERS = ["sim-ideal", "sim-hermes", "remote-tcp-hermes", "remote-ipc-ideal"]


@pytest.fixture(params=DRIVERS)
def factory(request: pytest.FixtureRequest) -> Callable[[], Driver]:
    kind = request.param
    if kind == "sim-ideal":
        return lambda: SimDriver("ideal")
    if kind == "sim-hermes":
        return lambda: SimDriver("hermes", seed=1)
    endpoint = request.getfixturevalue("tcp_server" if "tcp" in kind else "ipc_server")
    return lambda: RemoteDriver(endpoint, timeout_s=10)


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=[r.check.__name__ for r in REQUIREMENTS])
def test_requirement(requirement: Requirement, factory: Callable[[], Driver]) -> None:
    outcome = check_requirement(requirement, factory)
    assert outcome.passed, f"{outcome.name}: {outcome.detail}"


def test_suite_detects_a_broken_driver() -> None:
    """The suite can fail: a driver that ignores request ids and doubles pulses is caught."""

    class Forgetful(SimDriver):
        def apply_pulses(self, region, counts, reset_mask=None, *, request_id=None):  # type: ignore[no-untyped-def]
            self._replies = type(self._replies)()  # forget every recorded reply
            return super().apply_pulses(region, counts, reset_mask, request_id=request_id)

    report = run_conformance(lambda: Forgetful("ideal"))
    failed = {o.name for o in report.outcomes if not o.passed}
    assert failed == {"a retried pulse request id is not applied twice"}
    assert "FAIL" in report.format() and not report.passed


def test_open_driver_urls(tmp_path: Path) -> None:
    with open_driver("sim://") as d:
        assert d.info().preset == "hermes"
    with open_driver(f"sim://?preset=ideal&seed=2&state_dir={tmp_path}") as d:
        assert d.info().preset == "ideal"
    from drivers import InvalidRequest, NotFound

    with pytest.raises(InvalidRequest, match="unknown driver URL scheme 'http'"):
        open_driver("http://x")
    with pytest.raises(InvalidRequest, match="unknown sim:// option"):
        open_driver("sim://?preset=ideal&colour=red")
    try:
        import drivers.board as board

        has_board = hasattr(board, "open_board")
    except ImportError:
        has_board = False
    if not has_board:
        with pytest.raises(NotFound, match="board driver"):
            open_driver("board://lab.yaml")


@pytest.mark.hardware
def test_real_device_conforms(device_url: str) -> None:
    report = run_conformance(device_url)
    assert report.passed, report.format()
