"""Protocol rules at the server (docs/protocol.md): error replies name the request whenever
its header parsed; lease verbs are idempotent by request id; ``leases`` lists the
caller's own leases and reservations; loosely typed requests are refused."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from drivers.server import DeviceServer
from drivers.sim import SimDriver
from protocols import PROTOCOL_VERSION, Region, encode
from protocols.messages import (
    AdvanceRequest,
    LeaseAcquire,
    LeaseRelease,
    LeasesRequest,
    MvmRequest,
    ResetRequest,
)
from tests.drivers.fakes import Sessions

R = Region(0, 0, 8, 0, 8)


@pytest.fixture
def server() -> DeviceServer:
    return DeviceServer(SimDriver("ideal"), "inproc://unused")


def _header(frames: list) -> dict:  # type: ignore[type-arg]
    return json.loads(bytes(frames[0]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, b: ({**h, "surplus": 1}, b),  # an extra field
        lambda h, b: (h, []),  # a missing buffer
        lambda h, b: ({**h, "version": PROTOCOL_VERSION - 1}, b),  # another version
        lambda h, b: ({**h, "region": {**h["region"], "row1": 999}}, b),  # off the chip
        lambda h, b: ({**h, "region": {**h["region"], "row1": 0}}, b),  # empty region
        lambda h, b: ({**h, "transpose": "false"}, b),  # a loose type
        lambda h, b: (h, [b"\0" * 3]),  # a buffer of the wrong size
    ],
)
def test_error_replies_carry_the_request_id_whenever_the_header_parsed(
    server: DeviceServer, mutate
) -> None:  # type: ignore[no-untyped-def]
    clients = Sessions(server)
    frames = clients.frames(
        b"a", encode(MvmRequest(request_id="m-7", region=R), {"x": np.zeros((1, 8), np.float32)})
    )
    header, buffers = mutate(_header(frames), frames[1:])
    rep = clients.server.handle(b"a", [json.dumps(header).encode(), *buffers], 0.0)
    msg = json.loads(bytes(rep[0]))  # read raw: the reply's own version is ours
    assert msg["kind"] == "error" and msg["request_id"] == "m-7"
    assert msg["code"] in ("bad_request", "version_mismatch")


def test_an_unparseable_header_is_answered_with_dash(server: DeviceServer) -> None:
    for junk in (b"\xff\xfe", b"[1, 2]", b'{"version": 3, "request_id": ""}'):
        msg = json.loads(bytes(server.handle(b"a", [junk], 0.0)[0]))
        assert msg["request_id"] == "-" and msg["code"] in ("bad_request", "version_mismatch")


def test_lease_acquire_retried_returns_the_same_lease(server: DeviceServer) -> None:
    clients = Sessions(server)
    frames = encode(LeaseAcquire(request_id="acq", region=R, mode="write"))
    first = clients.call(b"a", frames)[0]
    again = clients.call(b"a", frames)[0]
    assert first.kind == "lease_reply" and again == first
    assert len(server.leases.held_by(clients.identity[b"a"])) == 1
    # the same id for other arguments is refused, not a second lease
    other = clients.call(b"a", encode(LeaseAcquire(request_id="acq", region=R, mode="read")))[0]
    assert other.code == "bad_request" and "already used" in other.message
    # another client reusing the id is another request (ids are per identity)
    theirs = clients.call(b"b", encode(LeaseAcquire(request_id="acq", region=R, mode="read")))[0]
    assert theirs.code == "lease_conflict"
    # release, twice with one id: the first reply both times
    rel = encode(LeaseRelease(request_id="rel", lease_id=first.lease_id))
    r1, r2 = clients.call(b"a", rel)[0], clients.call(b"a", rel)[0]
    assert r1.kind == "lease_released" and r2 == r1
    assert server.leases.held_by(clients.identity[b"a"]) == []
    # a fresh id for a lease already released is not_found
    gone = clients.call(b"a", encode(LeaseRelease(request_id="rel2", lease_id=first.lease_id)))
    assert gone[0].code == "not_found"
    # a retry of the acquire once its lease lapsed: not_found, never a second lease
    late = clients.call(b"a", frames)[0]
    assert late.code == "not_found" and first.lease_id in late.message
    assert server.leases.held_by(clients.identity[b"a"]) == []


def test_leases_lists_only_the_callers_leases_and_reservations(server: DeviceServer) -> None:
    clients = Sessions(server)
    la = clients.call(b"a", encode(LeaseAcquire(request_id="1", region=R, mode="read")))[0]
    lb = clients.call(b"a", encode(LeaseAcquire(request_id="2", region=Region(1, 0, 4, 0, 4))))[0]
    clients.call(b"b", encode(LeaseAcquire(request_id="1", region=Region(0, 8, 9, 8, 9))))
    mine = clients.call(b"a", encode(LeasesRequest(request_id="ls")))[0]
    assert mine.kind == "leases_reply"
    assert [x.lease_id for x in mine.leases] == [la.lease_id, lb.lease_id]
    assert [x.request_id for x in mine.leases] == ["1", "2"]
    assert mine.leases[0].mode == "read" and mine.leases[1].region == Region(1, 0, 4, 0, 4)
    assert mine.reservations == ()
    # a reservation row of this identity (the shared-chips scheduler writes them) is listed
    with server.db.transaction() as c:
        c.execute(
            "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("V1", clients.identity[b"a"], "run-1", "layer0", 1, 4, 8, 0, 8, 0,
             time.time(), time.time() + 60),
        )  # fmt: skip
    mine = clients.call(b"a", encode(LeasesRequest(request_id="ls2")))[0]
    (res,) = mine.reservations
    assert res.reservation_id == "V1" and res.run_id == "run-1" and not res.whole_chip
    assert clients.call(b"b", encode(LeasesRequest(request_id="ls")))[0].reservations == ()
    # leases of a silent client lapse and leave the list
    theirs = clients.call(
        b"b",
        encode(
            LeasesRequest(request_id="ls3"),
        ),
        now=100.0,
    )[0]
    assert len(theirs.leases) == 1
    assert clients.call(b"a", encode(LeasesRequest(request_id="ls4")), now=100.0)[0].leases == ()


def test_state_changing_ids_still_apply_once(server: DeviceServer) -> None:
    clients = Sessions(server)
    frames = encode(AdvanceRequest(request_id="adv", dt_s=2.0))
    t1 = clients.call(b"a", frames)[0].report.time_s
    t2 = clients.call(b"a", frames)[0].report.time_s
    assert t1 == t2 == server.driver.time_s()
    assert clients.call(b"a", encode(ResetRequest(request_id="adv", region=R)))[0].code == (
        "bad_request"
    )


def test_the_keyring_excludes_the_server_key_and_reloads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    import zmq.auth

    from drivers.auth import KeyRing, generate_keypair

    server_pub, _ = generate_keypair(tmp_path, "server")
    alice_pub, _ = generate_keypair(tmp_path, "alice")
    server_key = zmq.auth.load_certificate(str(server_pub))[0]
    alice_key = zmq.auth.load_certificate(str(alice_pub))[0]
    ring = KeyRing(tmp_path, exclude={server_key})
    assert ring.allowed == {alice_key} and not ring.callback("*", server_key)
    assert not ring.changed()
    bob_pub, _ = generate_keypair(tmp_path, "bob")
    bob_key = zmq.auth.load_certificate(str(bob_pub))[0]
    os.utime(tmp_path, ns=(0, ring.stamp() + 1))  # a coarse clock may not have moved
    assert ring.changed() and not ring.callback("*", bob_key)
    assert ring.reload() == (1, 0) and ring.callback("*", bob_key)
    alice_pub.unlink()
    (tmp_path / "junk.key").write_text("not a certificate")
    assert ring.reload() == (0, 1) and not ring.callback("*", alice_key)
    with pytest.raises(Exception, match="other than the server's own"):
        KeyRing(tmp_path, exclude={server_key, bob_key})


def test_remote_driver_refuses_to_send_what_the_server_could_not_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from drivers import LimitExceeded
    from drivers.remote import RemoteDriver
    from protocols.framing import MAX_MESSAGE_BYTES
    from protocols.messages import PulseReply, PulseRequest

    server = DeviceServer(SimDriver("ideal"), f"ipc://{tmp_path}/d.sock")
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        with RemoteDriver(server.bound[0], timeout_s=30) as remote:
            sent = remote.link_bytes().sent
            huge = np.zeros(MAX_MESSAGE_BYTES + 1, np.uint8)
            with pytest.raises(LimitExceeded, match="message bound"):
                remote._call(PulseRequest(request_id="p", region=R), PulseReply, {"counts": huge})
            assert remote.link_bytes().sent == sent  # nothing went out
            assert remote.leases() == {"leases": [], "reservations": []}
    finally:
        server.stop()
        thread.join(10)
