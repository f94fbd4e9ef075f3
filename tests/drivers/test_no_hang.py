"""No blocking call without a bound (#20): a client that cannot get in fails, fast and typed.

The stress test opens a client without keys, with an unknown key and against a dead port,
each 100 times, against a real CURVE ``hil serve``; every attempt must end with the
cause's typed error, within its connect timeout (plus generous slack for a loaded
machine: this bounds a hang, it does not measure speed).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import zmq
from structlog.testing import capture_logs

from drivers import DeviceTimeout, DeviceUnreachable, Unauthorised
from drivers.auth import generate_keypair
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from drivers.zmq_link import ZmqLink
from tests.drivers.serve_proc import ServeProcess

ROUNDS = 100
CONNECT_TIMEOUT_S = 1.0
SLACK_S = 10.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("nohang")
    auth, rogue = d / "auth", d / "rogue"
    generate_keypair(auth, "server")
    generate_keypair(auth, "alice")
    generate_keypair(rogue, "mallory")
    with ServeProcess(
        "sim://?preset=ideal",
        "tcp://127.0.0.1:*",
        ["--auth-keys", str(auth)],
        log_path=d / "serve.log",
    ) as srv:
        yield srv.endpoint, auth, rogue


def _fails_in_time(make, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(ROUNDS):
        t0 = time.monotonic()
        with pytest.raises(error, match=match):
            make()
        assert time.monotonic() - t0 < CONNECT_TIMEOUT_S + SLACK_S


def test_client_without_keys_fails_typed_every_time(curve_server) -> None:  # type: ignore[no-untyped-def]
    endpoint, _, _ = curve_server
    _fails_in_time(
        lambda: RemoteDriver(endpoint, connect_timeout_s=CONNECT_TIMEOUT_S, heartbeats=False),
        Unauthorised,
        "requires CURVE keys",
    )


def test_client_with_unknown_key_fails_typed_every_time(curve_server) -> None:  # type: ignore[no-untyped-def]
    endpoint, auth, rogue = curve_server
    _fails_in_time(
        lambda: RemoteDriver(
            endpoint,
            server_key=auth / "server.key",
            client_key=rogue / "mallory.key_secret",
            connect_timeout_s=CONNECT_TIMEOUT_S,
            heartbeats=False,
        ),
        Unauthorised,
        "refused this client's CURVE key",
    )


def test_client_against_a_dead_port_fails_typed_every_time() -> None:
    endpoint = f"tcp://127.0.0.1:{_closed_port()}"
    _fails_in_time(
        lambda: RemoteDriver(endpoint, connect_timeout_s=CONNECT_TIMEOUT_S, heartbeats=False),
        DeviceUnreachable,
        "nothing is listening",
    )


def test_the_right_key_still_gets_in(curve_server) -> None:  # type: ignore[no-untyped-def]
    endpoint, auth, _ = curve_server
    with RemoteDriver(
        endpoint, server_key=auth / "server.key", client_key=auth / "alice.key_secret"
    ) as alice:
        assert alice.info().chips == 2


def test_a_send_with_no_ready_peer_returns_at_its_deadline() -> None:
    """The hang of #20: a DEALER without a ready pipe. ``send`` must give up at the deadline."""
    link = ZmqLink(zmq.Context.instance(), f"tcp://127.0.0.1:{_closed_port()}", b"c-x", None)
    try:
        link.sock.setsockopt(zmq.IMMEDIATE, 1)  # no pipe until a connection exists: never
        link.sock.disconnect(link.endpoint)
        t0 = time.monotonic()
        assert link.send([b"{}"], time.monotonic() + 0.2) is False
        assert time.monotonic() - t0 < 0.2 + SLACK_S
        assert link.recv("r", time.monotonic() + 0.05) is None
    finally:
        link.close()


def test_requests_fail_typed_once_the_server_is_gone(tmp_path: Path) -> None:
    server = ServeProcess(
        "sim://?preset=ideal", f"ipc://{tmp_path}/s.sock", log_path=tmp_path / "s.log"
    ).start()
    try:
        remote = RemoteDriver(server.endpoint, timeout_s=0.2, retries=2, backoff_s=0.01)
    except BaseException:
        server.kill()
        raise
    with remote:
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="3 attempt"):
            remote.time_s()
        assert time.monotonic() - t0 < 3 * 0.2 + 0.03 + SLACK_S


def test_server_reply_to_a_vanished_client_is_dropped_not_blocking() -> None:
    """ROUTER_MANDATORY + NOBLOCK: an unroutable reply is logged and dropped."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        with capture_logs() as logs:
            DeviceServer._send(sock, b"gone", [b"{}"])
        assert [e["event"] for e in logs] == ["reply_dropped"]
        assert logs[0]["client"] == "gone"
    finally:
        sock.close()


def test_retry_waits_double_up_to_max_backoff_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backoff_s · 2^(attempt−1)`` between attempts, never more than ``max_backoff_s``:
    a client with many retries keeps probing a server that is down (uncapped, retry 12 of
    50 ms would sleep 102 s)."""
    import threading

    import drivers.remote
    from tests.drivers.fakes import FakeDriver

    server = DeviceServer(FakeDriver(), f"ipc://{tmp_path}/s.sock")
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5)
    remote = RemoteDriver(
        server.bound[0],
        timeout_s=0.05,
        retries=12,
        backoff_s=0.05,
        max_backoff_s=0.4,
        heartbeats=False,
    )
    server.stop()
    thread.join(5)
    waits: list[float] = []
    main = threading.current_thread()
    real_sleep = time.sleep

    def sleep(s: float) -> None:
        if threading.current_thread() is main:
            waits.append(s)
        else:
            real_sleep(s)

    monkeypatch.setattr(drivers.remote.time, "sleep", sleep)
    with remote, pytest.raises(DeviceTimeout, match="13 attempt"):
        remote.time_s()
    assert waits == pytest.approx([0.05, 0.1, 0.2] + [0.4] * 9)


def test_max_backoff_s_below_backoff_s_is_refused(tmp_path: Path) -> None:
    from drivers import InvalidRequest

    with pytest.raises(InvalidRequest, match="max_backoff_s=0.01 must be >= backoff_s=0.05"):
        RemoteDriver(f"ipc://{tmp_path}/nobody.sock", backoff_s=0.05, max_backoff_s=0.01)
    with pytest.raises(InvalidRequest, match="max_backoff_s"):
        RemoteDriver.from_url(f"ipc://{tmp_path}/nobody.sock?backoff_s=1&max_backoff_s=0.5")
