"""Shared chips, safely: identities that a reused routing id cannot take over, bounds on
``advance``, leases and messages, and ``status`` — in-process and with real processes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from drivers.remote import RemoteDriver
from drivers.server import DeviceServer, is_loopback
from drivers.sim import SimDriver
from hil.cli import main
from protocols import PROTOCOL_VERSION, Region, decode_reply, encode
from protocols.messages import AdvanceRequest, Hello, LeaseAcquire, LeaseRelease, ResetRequest
from tests.drivers.fakes import Sessions
from tests.drivers.serve_proc import ServeProcess

R = Region(0, 0, 8, 0, 8)


def test_identity_is_the_session_never_the_routing_id() -> None:
    server = DeviceServer(SimDriver("ideal"), "inproc://unused")
    clients = Sessions(server)
    lease = clients.call(b"victim", encode(LeaseAcquire(request_id="l", region=R)))[0]
    assert lease.kind == "lease_reply"
    token = clients.tokens[b"victim"]
    # the victim's routing id without its token: no identity at all
    anon = decode_reply(server.handle(b"victim", encode(ResetRequest(request_id="x", region=R)), 0))
    assert anon[0].code == "unauthorised" and "session" in anon[0].message
    # a client of its own, on the victim's routing id: it is itself, and is refused
    frames = clients.frames(b"mallory", encode(ResetRequest(request_id="x", region=R)))
    refused = decode_reply(server.handle(b"victim", frames, 0.0))[0]
    assert refused.code == "lease_conflict"
    assert token not in refused.message and clients.identity[b"victim"] in refused.message
    stolen = clients.frames(
        b"mallory", encode(LeaseRelease(request_id="r", lease_id=lease.lease_id))
    )
    assert decode_reply(server.handle(b"victim", stolen, 0.0))[0].code == "not_found"
    forged = json.loads(frames[0])
    forged["session"] = "x" * 32
    guess = decode_reply(server.handle(b"victim", [json.dumps(forged).encode()], 0.0))[0]
    assert guess.code == "unauthorised"
    assert clients.identity[b"victim"] != clients.identity[b"mallory"]
    hello = decode_reply(server.handle(b"new", encode(Hello(request_id="h", session=token)), 0))[0]
    assert hello.client_id == clients.identity[b"victim"]  # the token resumes its session


@pytest.mark.parametrize("dt_s", [1e308, math.inf, math.nan, -1.0, 11 * 365.25 * 86400])
def test_advance_out_of_bounds_is_refused_and_the_clock_stays(dt_s: float) -> None:
    drv = SimDriver("ideal")
    server = DeviceServer(drv, "inproc://unused")
    clients = Sessions(server)
    before = drv.time_s()
    header = json.loads(encode(AdvanceRequest(request_id="a", dt_s=1.0))[0])
    header["dt_s"] = dt_s
    raw = json.dumps(header).encode()  # NaN and Infinity as Python's json writes them
    rep = clients.call(b"c", [raw])[0]
    assert rep.kind == "error" and rep.code in ("bad_request", "limit_exceeded")
    assert drv.time_s() == before and math.isfinite(drv.time_s())
    ok = clients.call(b"c", encode(AdvanceRequest(request_id="b", dt_s=3600.0)))[0]
    assert ok.kind == "advance_reply" and ok.report.time_s == pytest.approx(before + 3600.0)


def test_leases_are_checked_against_the_chips_and_a_quota() -> None:
    server = DeviceServer(SimDriver("ideal"), "inproc://unused", max_leases=3)
    clients = Sessions(server)
    nowhere = clients.call(b"c", encode(LeaseAcquire(request_id="n", region=Region(7, 0, 1, 0, 1))))
    assert nowhere[0].code == "bad_request" and "does not exist" in nowhere[0].message
    for i in range(3):
        region = Region(0, i, i + 1, 0, 1)
        assert clients.call(b"c", encode(LeaseAcquire(request_id=f"q{i}", region=region)))[0].kind
    over = clients.call(b"c", encode(LeaseAcquire(request_id="q3", region=Region(1, 0, 1, 0, 1))))
    assert over[0].code == "limit_exceeded" and "quota" in over[0].message


def _raw_dealer(endpoint: str, routing_id: bytes | None = None, curve=None) -> zmq.Socket:  # type: ignore[no-untyped-def]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
    sock.connect(endpoint)
    return sock


def _ask(sock: zmq.Socket, frames: list) -> object:  # type: ignore[type-arg]
    sock.send_multipart(frames)
    assert sock.poll(10_000), "no reply"
    return decode_reply(sock.recv_multipart())[0]


def test_a_reused_routing_id_cannot_touch_anothers_lease(tmp_path: Path) -> None:
    sock = f"ipc://{tmp_path}/dev.sock"
    with ServeProcess("sim://?preset=ideal", sock, log_path=tmp_path / "s.log") as srv:
        with RemoteDriver(srv.endpoint, timeout_s=5) as victim:
            victim.acquire_lease(R, "write")
            thief = _raw_dealer(srv.endpoint, routing_id=victim.routing_id)
            try:
                rep = _ask(thief, encode(ResetRequest(request_id="x", region=R)))
                assert rep.code == "unauthorised"  # type: ignore[attr-defined]
                hello = _ask(thief, encode(Hello(request_id="h", client="thief")))
                frames = encode(ResetRequest(request_id="y", region=R, session=hello.session))  # type: ignore[attr-defined]
                rep = _ask(thief, frames)
                assert rep.code == "lease_conflict"  # type: ignore[attr-defined]
                assert victim.session not in rep.message  # type: ignore[attr-defined]
            finally:
                thief.close()
            victim.reset(R)  # the victim's own writes still go through


def test_a_reused_routing_id_under_curve_is_still_its_own_key(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    for name in ("server", "alice", "mallory"):
        assert main(["keys", "generate", str(auth), "--name", name]) == 0
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(str(auth / "server.key"))
    m_public, m_secret = zmq.auth.load_certificate(str(auth / "mallory.key_secret"))
    log = tmp_path / "s.log"
    with ServeProcess(
        "sim://?preset=ideal", "tcp://127.0.0.1:*", ["--auth-keys", str(auth)], log_path=log
    ) as srv:
        url = f"{srv.endpoint}?server_key={auth}/server.key&timeout_s=5"
        from drivers import open_driver

        with open_driver(f"{url}&client_key={auth}/alice.key_secret") as alice:
            assert isinstance(alice, RemoteDriver) and alice.client_id == "key:alice"
            alice.acquire_lease(R, "write")
            thief = _raw_dealer(srv.endpoint, alice.routing_id, (server_public, m_public, m_secret))
            try:
                hello = _ask(thief, encode(Hello(request_id="h")))
                assert hello.client_id == "key:mallory"  # type: ignore[attr-defined]
                rep = _ask(thief, encode(ResetRequest(request_id="y", region=R)))
                assert rep.code == "lease_conflict"  # type: ignore[attr-defined]
            finally:
                thief.close()
            alice.reset(R)


def test_too_many_frames_or_bytes_are_refused_and_the_server_serves_on(tmp_path: Path) -> None:
    sock = f"ipc://{tmp_path}/dev.sock"
    with ServeProcess("sim://?preset=ideal", sock, log_path=tmp_path / "s.log") as srv:
        raw = _raw_dealer(srv.endpoint)
        try:
            header = json.dumps({"version": PROTOCOL_VERSION, "kind": "info", "request_id": "i"})
            rep = _ask(raw, [header.encode()] + [b"x"] * 9_999)
            assert rep.code == "limit_exceeded" and "frames" in rep.message  # type: ignore[attr-defined]
            assert rep.request_id == "i"  # the header parsed: the refusal names its request
            big = np.zeros(40 * 2**20, np.uint8)
            rep = _ask(raw, [header.encode(), big, big])
            assert rep.code == "limit_exceeded" and "exceeds" in rep.message  # type: ignore[attr-defined]
            assert rep.request_id == "i"
            rep = _ask(raw, [b"not json", big, big])
            assert rep.code == "limit_exceeded" and rep.request_id == "-"  # no id to name
        finally:
            raw.close()
        with RemoteDriver(srv.endpoint, timeout_s=5) as ok:
            assert ok.read_conductances(R).shape == (8, 8, 4)


def test_hil_status_shows_clients_leases_and_rates(tmp_path: Path) -> None:
    sock = f"ipc://{tmp_path}/dev.sock"
    with ServeProcess("sim://?preset=ideal", sock, log_path=tmp_path / "s.log") as srv:
        with (
            RemoteDriver(srv.endpoint, timeout_s=5, client_name="alice") as a,
            RemoteDriver(srv.endpoint, timeout_s=5, client_name="bob") as b,
        ):
            a.acquire_lease(R, "write")
            b.apply_pulses(Region(1, 0, 2, 0, 2), np.ones((2, 2, 4), np.int32))
            out = subprocess.run(
                [sys.executable, "-m", "hil", "status", srv.endpoint, "--json"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            status = json.loads(out.stdout.strip().splitlines()[-1])
            ids = {c["identity"] for c in status["clients"]}
            assert {a.client_id, b.client_id} <= ids
            assert a.session not in out.stdout and b.session not in out.stdout
            (lease,) = status["leases"]
            assert lease["identity"] == a.client_id and lease["region"]["row1"] == 8
            assert status["request_rates"]["apply_pulses"] > 0
            assert status["chips"][1]["set_pulses"] == 16
            assert status["chips"][0]["leased_fraction"] == pytest.approx(64 / 65536)
            text = subprocess.run(
                [sys.executable, "-m", "hil", "status", srv.endpoint],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
            assert "clients (4)" in text and a.client_id in text  # and two status clients


def test_unauthenticated_non_loopback_binds_warn(capsys: pytest.CaptureFixture[str]) -> None:
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("ipc:///tmp/x.sock")
    assert is_loopback("tcp://[::1]:5555") and is_loopback("tcp://localhost:1")
    assert not is_loopback("tcp://0.0.0.0:5555") and not is_loopback("tcp://*:5555")
    # TEST-NET-1 is no address of this machine: the bind fails after the warning
    assert main(["serve", "sim://?preset=ideal", "--bind", "tcp://192.0.2.1:5555"]) == 1
    err = capsys.readouterr().err
    assert "without authentication" in err and "--insecure" in err
    assert (
        main(["serve", "sim://?preset=ideal", "--bind", "tcp://192.0.2.1:5555", "--insecure"]) == 1
    )
    assert "without authentication" not in capsys.readouterr().err
