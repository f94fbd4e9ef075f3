"""DeviceServer request logic (no sockets) and RemoteDriver against a threaded server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from drivers import DeviceTimeout, InvalidRequest, LeaseConflict, NotFound
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from protocols import Region, decode_reply, encode
from protocols.messages import PROTOCOL_VERSION, LeaseAcquire, MvmRequest, PulseRequest
from tests.drivers.fakes import G_MIN_US, STEP_US, FakeDriver, Sessions

R = Region(0, 0, 4, 0, 3)


_CLIENTS: dict[int, Sessions] = {}


def _reply(server: DeviceServer, who: bytes, frames: list, now: float = 0.0):  # type: ignore[no-untyped-def]
    """``who`` says hello once (a session), then its requests carry the session token."""
    clients = _CLIENTS.setdefault(id(server), Sessions(server))
    try:
        frames = clients.frames(who, frames, now)
    except ValueError:  # not a JSON header: sent as it is
        pass
    return decode_reply(server.handle(who, frames, now))


def test_handle_turns_bad_input_into_typed_errors() -> None:
    server = DeviceServer(FakeDriver(), "inproc://unused")
    msg, _ = _reply(server, b"c1", [b"garbage"])
    assert msg.kind == "error" and msg.code == "bad_request" and msg.request_id == "-"
    msg, _ = _reply(server, b"c1", [b'{"version": 9}'])
    assert msg.code == "version_mismatch"
    bad = encode(
        MvmRequest(request_id="m1", region=Region(0, 0, 99, 0, 3)),
        {"x": np.zeros((1, 99), np.float32)},
    )
    msg, _ = _reply(server, b"c1", bad)
    assert msg.code == "bad_request" and msg.request_id == "m1" and "exceeds" in msg.message
    big = encode(PulseRequest(request_id="p", region=R), {"counts": np.full((4, 3, 4), 99)})
    assert _reply(server, b"c1", big)[0].code == "limit_exceeded"


def test_retry_applies_once_per_client_and_ids_are_per_client() -> None:
    drv = FakeDriver()
    server = DeviceServer(drv, "inproc://unused")
    frames = encode(
        PulseRequest(request_id="same", region=R), {"counts": np.ones((4, 3, 4)).astype(np.int32)}
    )
    first = _reply(server, b"alice", frames)[0]
    assert _reply(server, b"alice", frames)[0] == first
    assert drv.hook_calls.count("apply_pulses") == 1
    _reply(server, b"bob", frames)  # bob's "same" is another request
    assert drv.hook_calls.count("apply_pulses") == 2
    np.testing.assert_allclose(drv.g[0, :4, :3], G_MIN_US + 2 * STEP_US)


def test_leases_enforced_between_clients_and_expire() -> None:
    drv = FakeDriver()
    server = DeviceServer(drv, "inproc://unused", lease_ttl_s=1.0)
    lease = _reply(server, b"alice", encode(LeaseAcquire(request_id="l", region=R)), now=0.0)[0]
    assert lease.kind == "lease_reply"
    pulse = encode(PulseRequest(request_id="p", region=R), {"counts": np.ones((4, 3, 4), np.int32)})
    assert _reply(server, b"bob", pulse, now=0.5)[0].code == "lease_conflict"
    assert _reply(server, b"alice", pulse, now=0.5)[0].kind == "apply_pulses_reply"
    # alice goes silent; after ttl bob gets through
    assert _reply(server, b"bob", pulse, now=1.6)[0].kind == "apply_pulses_reply"


def test_retry_of_an_applied_request_is_answered_despite_a_new_lease() -> None:
    drv = FakeDriver()
    server = DeviceServer(drv, "inproc://unused")
    counts = {"counts": np.ones((4, 3, 4), np.int32)}
    first = _reply(server, b"alice", encode(PulseRequest(request_id="p", region=R), counts))[0]
    _reply(server, b"bob", encode(LeaseAcquire(request_id="l", region=R)))
    retry = _reply(server, b"alice", encode(PulseRequest(request_id="p", region=R), counts))[0]
    assert retry == first and drv.hook_calls.count("apply_pulses") == 1
    new = _reply(server, b"alice", encode(PulseRequest(request_id="q", region=R), counts))[0]
    assert new.kind == "error" and new.code == "lease_conflict"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeDriver, str]]:
    drv = FakeDriver()
    server = DeviceServer(
        drv, f"ipc://{tmp_path}/dev.sock", lease_ttl_s=1.5, heartbeat_interval_s=0.1
    )
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield drv, server.bound[0]
    server.stop()
    thread.join(5)


def test_remote_driver_round_trip(served: tuple[FakeDriver, str], rng: np.random.Generator) -> None:
    drv, endpoint = served
    with RemoteDriver(endpoint, timeout_s=2) as remote:
        assert remote.info() == drv.info()
        counts = rng.integers(0, 4, size=(4, 3, 4))
        rep = remote.apply_pulses(R, counts, request_id="r1")
        assert rep.set_pulses == counts.sum()
        assert remote.apply_pulses(R, counts, request_id="r1") == rep
        np.testing.assert_allclose(remote.read_conductances(R), drv.g[0, :4, :3])
        x = rng.uniform(-1, 1, (8, 4))
        np.testing.assert_allclose(remote.mvm(R, x), drv.mvm(R, x), rtol=1e-6)
        assert remote.advance(1.5) == 1.5 and remote.time_s() == 1.5
        with pytest.raises(InvalidRequest):
            remote.mvm(R, x[:, :2])


def test_remote_leases_and_heartbeats(served: tuple[FakeDriver, str]) -> None:
    _, endpoint = served
    with RemoteDriver(endpoint, timeout_s=2) as alice, RemoteDriver(endpoint, timeout_s=2) as bob:
        lease = alice.acquire_lease(R, "write")
        threading.Event().wait(2.0)  # > ttl: alice's heartbeat thread keeps the lease alive
        with pytest.raises(LeaseConflict, match=alice.client_id):
            bob.reset(R)
        alice.release_lease(lease)
        bob.reset(R)
        with pytest.raises(NotFound):
            alice.release_lease(lease)


def test_remote_says_nothing_listens_without_server(tmp_path: Path) -> None:
    with pytest.raises(DeviceTimeout, match="nothing is listening at ipc://"):
        RemoteDriver(f"ipc://{tmp_path}/nobody.sock", timeout_s=0.1, retries=1, backoff_s=0.01)


def test_server_survives_raw_garbage(served: tuple[FakeDriver, str]) -> None:
    _, endpoint = served
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for frames in ([b""], [b"\x00\x01"], [b"{}", b"x"], [b"[]"]):
            sock.send_multipart(frames)
            assert sock.poll(2000)
            assert decode_reply(sock.recv_multipart(zmq.NOBLOCK))[0].kind == "error"
    finally:
        sock.close()
    with RemoteDriver(endpoint, timeout_s=2) as remote:
        assert remote.info().chips == 2


def test_one_log_event_per_request_with_its_fields() -> None:
    from structlog.testing import capture_logs

    server = DeviceServer(FakeDriver(), "inproc://unused")
    pulse = encode(
        PulseRequest(request_id="p9", region=R), {"counts": np.ones((4, 3, 4), np.int32)}
    )
    alice = Sessions(server)
    frames = alice.frames(b"alice", pulse)
    with capture_logs() as logs:
        server.handle(b"alice", frames, 0.0)
        server.handle(b"alice", [b"junk"], 0.0)
    events = [e for e in logs if e["event"] == "request"]
    assert len(events) == 2
    ok, bad = events
    assert ok["client"] == alice.identity[b"alice"] == "alice-1"
    assert ok["verb"] == "apply_pulses" and ok["request_id"] == "p9"
    assert bad["client"] == "peer:alice"  # unparsed: known only by its routing id
    assert ok["region"] == str(R) and ok["outcome"] == "ok" and ok["duration_us"] >= 0
    assert bad["outcome"] == "bad_request" and bad["log_level"] == "warning"


def test_internal_errors_become_typed_replies() -> None:
    class Broken(FakeDriver):
        def _reset(self, region, request_id):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("bug")

    server = DeviceServer(Broken(), "inproc://unused")
    from protocols.messages import ResetRequest

    msg, _ = _reply(server, b"c", encode(ResetRequest(request_id="r", region=R)))
    assert msg.code == "internal" and "ZeroDivisionError" in msg.message


def test_remote_driver_reports_a_server_of_another_protocol_version(tmp_path: Path) -> None:
    from drivers import VersionMismatch

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/vnext.sock"
    other = PROTOCOL_VERSION + 1
    router.bind(endpoint)

    def answer_as_next_version() -> None:
        if router.poll(5000):
            ident, header = router.recv_multipart(zmq.NOBLOCK)[:2]
            rid = json.loads(header)["request_id"]
            body = {"version": other, "kind": "hello_reply", "request_id": rid}
            router.send_multipart([ident, json.dumps(body).encode()])

    thread = threading.Thread(target=answer_as_next_version)
    thread.start()
    try:
        with pytest.raises(VersionMismatch, match=f"version {other}"):
            RemoteDriver(endpoint, timeout_s=5, retries=0)
    finally:
        thread.join(10)
        router.close()
