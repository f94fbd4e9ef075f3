"""Answers within seconds (#13, item 3): opening a remote driver is one connection probe.

Each cause gets its typed error with the cause in one line, well within a generous
bound (``BOUND_S``: this catches a hang or a retry loop, it does not time the probe):
nothing listening, CURVE keys needed, an unknown key, a wrong server key, another
protocol version, a busy server. The server logs connects, disconnects and refused
handshakes (the refused key in Z85), and lease expiry; ``hil driver check`` connects
once and reports a failed connection in one line.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from structlog.testing import capture_logs

from drivers import DeviceTimeout, DeviceUnreachable, DriverError, Unauthorised, VersionMismatch
from drivers.auth import generate_keypair
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from drivers.zmq_link import ZmqLink
from hil.cli import main
from protocols import PROTOCOL_VERSION, Region, encode
from protocols.messages import Hello, HelloReply, LeaseAcquire
from tests.drivers.fakes import FakeDriver, Sessions
from tests.drivers.serve_proc import ServeProcess, wait_for

PROBE_S = 3.0
BOUND_S = PROBE_S + 7.0
R = Region(0, 0, 4, 0, 3)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line_within(make: Callable[[], Any], error: type[DriverError], *fragments: str) -> str:
    t0 = time.monotonic()
    with pytest.raises(error) as info:
        make()
    assert time.monotonic() - t0 < BOUND_S
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture(scope="module")
def curve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path, Path]]:
    d = tmp_path_factory.mktemp("probe")
    auth, rogue = d / "auth", d / "rogue"
    generate_keypair(auth, "server")
    generate_keypair(auth, "alice")
    generate_keypair(rogue, "mallory")
    generate_keypair(rogue, "fake-server")
    log = d / "serve.log"
    with ServeProcess(
        "sim://?preset=ideal", "tcp://127.0.0.1:*", ["--auth-keys", str(auth)], log_path=log
    ) as srv:
        yield srv.endpoint, auth, rogue, log


def test_nothing_listening_on_tcp_or_ipc(tmp_path: Path) -> None:
    for endpoint in (f"tcp://127.0.0.1:{_closed_port()}", f"ipc://{tmp_path}/none.sock"):
        _one_line_within(
            lambda e=endpoint: RemoteDriver(e),  # type: ignore[misc]
            DeviceUnreachable,
            f"nothing is listening at {endpoint}",
        )


def test_server_needs_curve_keys(curve) -> None:  # type: ignore[no-untyped-def]
    endpoint, *_ = curve
    _one_line_within(lambda: RemoteDriver(endpoint), Unauthorised, "requires CURVE keys")


def test_unknown_key_is_named_in_z85(curve) -> None:  # type: ignore[no-untyped-def]
    endpoint, auth, rogue, _ = curve
    public = (rogue / "mallory.key").read_text().split('public-key = "')[1].split('"')[0]
    _one_line_within(
        lambda: RemoteDriver(
            endpoint, server_key=auth / "server.key", client_key=rogue / "mallory.key_secret"
        ),
        Unauthorised,
        f"refused this client's CURVE key {public}",
        "--auth-keys",
    )


def test_wrong_server_key(curve) -> None:  # type: ignore[no-untyped-def]
    endpoint, auth, rogue, _ = curve
    _one_line_within(
        lambda: RemoteDriver(
            endpoint, server_key=rogue / "fake-server.key", client_key=auth / "alice.key_secret"
        ),
        Unauthorised,
        "server_key is not that server's public key",
    )


def test_a_server_killed_mid_handshake_is_no_refusal(tmp_path: Path) -> None:
    """A connection waiting in the backlog of a server that dies (kill -9) sees the peer hang
    up mid-handshake, once: no CURVE refusal. The next server at that address serves it
    (the kill -9 flake of ``test_server_kill9_mid_stream_loses_and_doubles_nothing``)."""
    path = tmp_path / "s.sock"
    dying = socket.socket(socket.AF_UNIX)
    dying.bind(str(path))
    dying.listen(4)  # never accepts: the connection waits in the backlog, as under load
    link = ZmqLink(zmq.Context.instance(), f"ipc://{path}", b"c-killed", None)
    server = None
    loop = None
    try:
        assert wait_for(lambda: link.recv("-", time.monotonic() + 0.02) or link.connections)
        dying.close()  # the kill: the backlog's connections are reset (the file stays)
        assert wait_for(lambda: link.recv("-", time.monotonic() + 0.02) or link.hangups)
        server = DeviceServer(FakeDriver(), f"ipc://{path}")
        ready = threading.Event()
        loop = threading.Thread(target=server.serve, args=(ready,), daemon=True)
        loop.start()
        assert ready.wait(10)
        hello = Hello(request_id="h-1", client="after-kill")
        assert link.send(encode(hello), time.monotonic() + 10)
        reply = link.recv("h-1", time.monotonic() + 10)
        assert reply is not None and isinstance(reply[0], HelloReply)
    finally:
        link.close()
        if server is not None and loop is not None:
            server.stop()
            loop.join(10)


def test_a_peer_hanging_up_every_handshake_is_a_refusal(tmp_path: Path) -> None:
    """A peer that hangs up on every handshake refuses this client (a CURVE server does)."""
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(4)
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    closer = threading.Thread(target=hang_up, daemon=True)
    closer.start()
    link = ZmqLink(zmq.Context.instance(), f"ipc://{path}", b"c-refused", None)
    try:
        with pytest.raises(Unauthorised, match="requires CURVE keys"):
            link.recv("-", time.monotonic() + BOUND_S)
        assert link.hangups == 2
    finally:
        stop.set()
        closer.join(10)
        listener.close()
        link.close()


def test_keys_against_a_server_without_curve(tmp_path: Path) -> None:
    generate_keypair(tmp_path, "server")
    generate_keypair(tmp_path, "alice")
    with ServeProcess("sim://?preset=ideal", f"ipc://{tmp_path}/s.sock") as srv:
        _one_line_within(
            lambda: RemoteDriver(
                srv.endpoint,
                server_key=tmp_path / "server.key",
                client_key=tmp_path / "alice.key_secret",
            ),
            Unauthorised,
            "does not use CURVE",
        )


def test_another_protocol_version(tmp_path: Path) -> None:
    """A peer that answers as a server of the next protocol version would."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/next.sock"
    router.bind(endpoint)
    newer = PROTOCOL_VERSION + 1

    def answer() -> None:
        if router.poll(10_000):
            ident, header = router.recv_multipart(zmq.NOBLOCK)[:2]
            body = {
                "version": newer,
                "kind": "error",
                "request_id": json.loads(header)["request_id"],
                "code": "version_mismatch",
                "message": f"protocol version {PROTOCOL_VERSION} is not supported",
            }
            router.send_multipart([ident, json.dumps(body).encode()], zmq.NOBLOCK)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        _one_line_within(
            lambda: RemoteDriver(endpoint),
            VersionMismatch,
            f"speaks protocol version {newer}, this client version {PROTOCOL_VERSION}",
        )
    finally:
        thread.join(10)
        router.close()


class _Stuck(FakeDriver):
    """A device whose reset takes until ``release`` is set (at most 30 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def _reset(self, region, request_id):  # type: ignore[no-untyped-def]
        self.started.set()
        self.release.wait(30)
        return super()._reset(region, request_id)


def test_busy_server(tmp_path: Path) -> None:
    drv = _Stuck()
    server = DeviceServer(drv, f"ipc://{tmp_path}/busy.sock")
    ready = threading.Event()
    loop = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    loop.start()
    assert ready.wait(10)
    endpoint = server.bound[0]
    first = RemoteDriver(endpoint, timeout_s=30, retries=0, heartbeats=False)
    worker = threading.Thread(target=lambda: first.reset(R), daemon=True)
    try:
        worker.start()
        assert drv.started.wait(10)
        _one_line_within(
            lambda: RemoteDriver(endpoint, connect_timeout_s=1.0),
            DeviceTimeout,
            "did not answer hello within 1 s: the server is busy",
        )
    finally:
        drv.release.set()
        worker.join(30)
        first.close()
        server.stop()
        loop.join(10)


def test_server_logs_connects_disconnects_and_refused_handshakes(curve) -> None:  # type: ignore[no-untyped-def]
    endpoint, auth, rogue, log = curve
    public = (rogue / "mallory.key").read_text().split('public-key = "')[1].split('"')[0]
    with pytest.raises(Unauthorised):
        RemoteDriver(endpoint)
    with pytest.raises(Unauthorised):
        RemoteDriver(
            endpoint, server_key=auth / "server.key", client_key=rogue / "mallory.key_secret"
        )
    with RemoteDriver(
        endpoint, server_key=auth / "server.key", client_key=auth / "alice.key_secret"
    ):
        pass

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

    def logged(name: str, **fields: Any) -> bool:
        return any(
            e["event"] == name and all(str(v) in str(e.get(k)) for k, v in fields.items())
            for e in events()
        )

    assert wait_for(lambda: logged("client_disconnected"), timeout_s=10)
    assert logged("client_connected", peer="127.0.0.1:")
    assert logged("handshake_failed", cause="offered no CURVE keys")
    assert logged("client_rejected", client_key=public)


def test_lease_expiry_is_logged() -> None:
    server = DeviceServer(FakeDriver(), "inproc://unused", lease_ttl_s=1.0)
    clients = Sessions(server)
    clients.call(b"alice", encode(LeaseAcquire(request_id="l", region=R)), 0.0)
    bob = clients.frames(b"bob", encode(LeaseAcquire(request_id="m", region=R)), 0.0)
    with capture_logs() as logs:
        server.handle(b"bob", bob, 2.0)
    expired = [e for e in logs if e["event"] == "lease_expired"]
    assert len(expired) == 1 and expired[0]["client"] == clients.identity[b"alice"]


def test_driver_check_reports_a_dead_address_once(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    assert main(["--log-level", "critical", "driver", "check", url, "--json"]) == 1
    assert time.monotonic() - t0 < BOUND_S
    report = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in report["outcomes"]] == ["connect"]
    assert "nothing is listening" in report["outcomes"][0]["detail"]
    assert len(report["not_run"]) == 13 and report["not_run_reason"] == "no connection"


def test_driver_check_without_keys_says_so_in_one_line(curve, capsys) -> None:  # type: ignore[no-untyped-def]
    endpoint, *_ = curve
    assert main(["--log-level", "critical", "driver", "check", endpoint]) == 1
    out = capsys.readouterr().out
    assert out.count("requires CURVE keys") == 1 and out.count("FAIL") == 1
