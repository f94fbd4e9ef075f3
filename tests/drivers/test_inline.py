"""Which server thread runs a request: short requests on the I/O thread while nothing else
runs (no hop to the worker), everything else on the worker; heartbeats are answered while
a long request runs, and requests stay exactly-once and in order per client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

import drivers.server
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from protocols import Region, decode_reply
from protocols.messages import PROTOCOL_VERSION
from tests.drivers.fakes import FakeDriver

R = Region(0, 0, 4, 0, 3)


class GatedDriver(FakeDriver):
    """A FakeDriver that names the thread of every hook call and whose ``program`` waits
    for ``gate`` (a long request the test releases)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.programming = threading.Event()

    def _mvm(self, region, x, transpose):  # type: ignore[no-untyped-def]
        self.threads.append(("mvm", threading.current_thread().name))
        return super()._mvm(region, x, transpose)

    def _apply_pulses(self, region, counts, reset_mask, request_id):  # type: ignore[no-untyped-def]
        self.threads.append(("apply_pulses", threading.current_thread().name))
        return super()._apply_pulses(region, counts, reset_mask, request_id)

    def _program(self, region, target_us, tolerance_us, max_iterations, request_id):  # type: ignore[no-untyped-def]
        self.programming.set()
        assert self.gate.wait(60), "the test never released the long request"
        return super()._program(region, target_us, tolerance_us, max_iterations, request_id)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[GatedDriver, DeviceServer]]:
    drv = GatedDriver()
    server = DeviceServer(drv, f"ipc://{tmp_path}/dev.sock", lease_ttl_s=5.0)
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield drv, server
    drv.gate.set()
    server.stop()
    thread.join(5)


def test_an_mvm_is_served_on_the_io_thread_while_the_worker_is_idle(
    gated: tuple[GatedDriver, DeviceServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    drv, server = gated
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4))
    expected = drv.mvm(R, x)
    drv.threads.clear()
    with RemoteDriver(server.bound[0], timeout_s=10) as remote:
        before = server.worker_requests
        for _ in range(3):
            np.testing.assert_allclose(remote.mvm(R, x), expected, rtol=1e-6)
        remote.read_conductances(R)
        assert server.worker_requests == before  # no hop to the worker
        assert drv.threads == [("mvm", "hil-server-io")] * 3
        # a state-changing request still goes to the worker
        remote.apply_pulses(R, np.ones((4, 3, 4), np.int64), request_id="p1")
        assert drv.threads[-1][0] == "apply_pulses" and drv.threads[-1][1] != "hil-server-io"
        assert server.worker_requests == before + 1
        # an MVM with more input bytes than the I/O thread takes goes to the worker too
        monkeypatch.setattr(drivers.server, "INLINE_MAX_ARRAY_BYTES", x.size)
        remote.mvm(R, x)
        assert server.worker_requests == before + 2
        assert drv.threads[-1][0] == "mvm" and drv.threads[-1][1] != "hil-server-io"


def test_an_mvm_arriving_during_the_workers_sweep_waits_for_it_on_the_io_thread(
    gated: tuple[GatedDriver, DeviceServer],
) -> None:
    """The worker's sweep holds the request lock for a moment every 50 ms; an MVM that
    arrives then is still served by the I/O thread (it waits for the sweep), so where a
    request runs does not depend on when the sweep happened to run."""
    drv, server = gated
    x = np.ones((2, 4))
    expected = drv.mvm(R, x)
    drv.threads.clear()
    with RemoteDriver(server.bound[0], timeout_s=10) as remote:
        before = server.worker_requests
        got: list[np.ndarray] = []
        with server._exec:  # what the sweep holds while it expires leases
            mvm = threading.Thread(target=lambda: got.append(remote.mvm(R, x)))
            mvm.start()
            mvm.join(0.3)
            assert not got  # nothing runs beside the sweep
        mvm.join(10)
        assert len(got) == 1
        np.testing.assert_allclose(got[0], expected, rtol=1e-6)
        assert drv.threads == [("mvm", "hil-server-io")]
        assert server.worker_requests == before


def test_a_heartbeat_is_answered_and_an_mvm_waits_while_a_long_request_runs(
    gated: tuple[GatedDriver, DeviceServer],
) -> None:
    drv, server = gated
    endpoint = server.bound[0]
    x = np.ones((2, 4))
    expected = drv.mvm(R, x)
    with (
        RemoteDriver(endpoint, timeout_s=30) as alice,
        RemoteDriver(endpoint, timeout_s=30) as bob,
    ):
        done: list[object] = []
        long = threading.Thread(
            target=lambda: done.append(
                alice.program(
                    R, np.zeros((4, 3)), tolerance_us=0.5, max_iterations=5, request_id="prog"
                )
            )
        )
        long.start()
        assert drv.programming.wait(30)
        # the worker is busy: bob's heartbeat is answered by the I/O thread meanwhile...
        assert bob.heartbeat().request_id
        assert not drv.gate.is_set() and not done
        # ...and bob's MVM is not run beside the long request: it waits for it
        got: list[np.ndarray] = []
        mvm = threading.Thread(target=lambda: got.append(bob.mvm(R, x)))
        mvm.start()
        mvm.join(0.5)
        assert not got and not done
        drv.gate.set()
        long.join(30)
        mvm.join(30)
        assert done and len(got) == 1
        np.testing.assert_allclose(got[0], expected, rtol=1e-6)
        # the MVM that arrived during the long request ran after it, on the worker
        assert drv.threads[-1][0] == "mvm" and drv.threads[-1][1] != "hil-server-io"


def test_interleaved_clients_stay_exactly_once_and_in_order(
    gated: tuple[GatedDriver, DeviceServer],
) -> None:
    drv, server = gated
    endpoint = server.bound[0]
    counts = np.ones((4, 3, 4), np.int64)
    errors: list[BaseException] = []

    def client(name: str, chip: int) -> None:
        region = Region(chip, 0, 4, 0, 3)
        try:
            with RemoteDriver(endpoint, timeout_s=30) as d:
                for i in range(20):
                    d.apply_pulses(region, counts, request_id=f"{name}-{i}")
                    d.mvm(region, np.ones((1, 4)))
                    # a retry of the same id: recorded reply, nothing applied twice
                    d.apply_pulses(region, counts, request_id=f"{name}-{i}")
                    d.read_conductances(region)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n, c)) for n, c in (("a", 0), ("b", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # 20 pulses of STEP_US on every device of each chip's region: each id applied once
    assert drv.hook_calls.count("apply_pulses") == 40
    for chip in (0, 1):
        np.testing.assert_allclose(drv.g[chip, :4, :3], np.minimum(0.1 + 20.0, 10.0))


def test_a_malformed_mvm_gets_an_error_reply_from_the_io_thread_and_serving_goes_on(
    gated: tuple[GatedDriver, DeviceServer],
) -> None:
    _, server = gated
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.bound[0])
    bad = (
        f'{{"version":{PROTOCOL_VERSION},"request_id":"bad-1","kind":"mvm",'
        f'"region":{{"chip":0,"row0":0,"row1":"4","col0":0,"col1":3}},"transpose":false,'
        f'"arrays":[]}}'
    ).encode()
    try:
        for frames in ([bad], [bad, b"\x00" * 7], [b'{"kind":"mvm"'], [bad.replace(b"mvm", b"x")]):
            sock.send_multipart(frames)
            assert sock.poll(5000)
            reply = decode_reply(sock.recv_multipart(zmq.NOBLOCK))[0]
            assert reply.kind == "error" and reply.code == "bad_request"
            if frames[0] is bad:
                assert reply.request_id == "bad-1"
    finally:
        sock.close()
    with RemoteDriver(server.bound[0], timeout_s=10) as remote:
        assert remote.mvm(R, np.ones((1, 4))).shape == (1, 3)
