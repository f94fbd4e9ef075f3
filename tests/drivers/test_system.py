"""Reliability with real processes and sockets: ``hil serve`` subprocesses on ipc:// / tcp://.

- server kill -9 mid-stream of pulse requests, restart on the same state dir: the final
  true conductances equal those of a run that never crashed (nothing lost or doubled);
- a client killed while holding a lease: the lease is freed after expiry;
- Hypothesis-fuzzed frames and random bytes get error replies; the server keeps serving;
- CURVE: a wrong key is refused, the right key is served.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import LeaseConflict, Unauthorised
from drivers.remote import RemoteDriver
from drivers.sim import SimDriver
from protocols import Region, decode_reply
from tests.drivers.serve_proc import ServeProcess, wait_for
from tests.procs import readline_within

R = Region(0, 0, 16, 0, 16)
N_REQUESTS = 60


def _stream(seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(f"step-{i}", rng.integers(0, 3, (16, 16, 4))) for i in range(N_REQUESTS)]


@pytest.mark.slow
def test_server_kill9_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    stream = _stream(7)
    with SimDriver("hermes", seed=5) as ref:
        for rid, counts in stream:
            ref.apply_pulses(R, counts, request_id=rid)
        expected = ref.true_conductances(R)

    state, sock, log = tmp_path / "state", f"ipc://{tmp_path}/dev.sock", tmp_path / "serve.log"
    url = "sim://?preset=hermes&seed=5&compact_every=16"
    args = (url, sock, ["--state-dir", str(state)])
    done: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with RemoteDriver(sock, timeout_s=0.3, retries=60, backoff_s=0.02) as remote:
                for rid, counts in stream:
                    remote.apply_pulses(R, counts, request_id=rid)
                    done.append(1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    server = ServeProcess(*args, log_path=log).start()
    worker = threading.Thread(target=client)
    worker.start()
    assert wait_for(lambda: len(done) >= N_REQUESTS // 3, timeout_s=30)
    server.kill()  # kill -9 in the middle of the stream
    assert len(done) < N_REQUESTS
    server = ServeProcess(*args, log_path=log).start()
    worker.join(60)
    assert not errors, errors
    assert len(done) == N_REQUESTS
    assert server.terminate() == 0  # graceful SIGTERM persists
    with SimDriver("hermes", seed=5, state_dir=state) as restored:
        np.testing.assert_array_equal(restored.true_conductances(R), expected)


def test_lease_of_killed_client_expires(tmp_path: Path) -> None:
    sock = f"ipc://{tmp_path}/dev.sock"
    holder = (
        "import sys, time\n"
        "from drivers.remote import RemoteDriver\n"
        "from protocols import Region\n"
        f"d = RemoteDriver({sock!r}, timeout_s=5)\n"
        "d.acquire_lease(Region(0, 0, 16, 0, 16), 'write')\n"
        "print('leased', flush=True)\n"
        "time.sleep(60)\n"
    )
    extra = ["--lease-ttl", "1.5", "--heartbeat-interval", "0.1"]
    with ServeProcess("sim://?preset=ideal", sock, extra, log_path=tmp_path / "s.log"):
        proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
        try:
            assert readline_within(proc.stdout, 30).strip() == "leased"
            with RemoteDriver(sock, timeout_s=5) as other:
                time.sleep(2.0)  # > ttl: the holder's heartbeats keep its lease alive
                with pytest.raises(LeaseConflict):
                    other.reset(R)
                proc.kill()
                proc.wait(10)
                t0 = time.monotonic()
                while True:
                    try:
                        other.reset(R)
                        break
                    except LeaseConflict:
                        assert time.monotonic() - t0 < 10, "lease never expired"
                        time.sleep(0.05)
                assert time.monotonic() - t0 <= 1.5 + 3.0  # ttl + slack for a loaded machine
        finally:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("fuzz")
    with ServeProcess("sim://?preset=ideal", f"ipc://{d}/f.sock", log_path=d / "s.log") as srv:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(srv.endpoint)
        yield srv, sock
        sock.close()


_json_scalars = st.none() | st.booleans() | st.integers(-10, 2**40) | st.text(max_size=8)
_headers = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 1, 1, 0, 2, "1"]),
        "kind": st.sampled_from(["mvm", "apply_pulses", "program", "reset", "hello", "x", ""]),
        "request_id": st.text(max_size=4),
    },
    optional={
        "region": st.dictionaries(
            st.sampled_from(["chip", "row0", "row1", "col0", "col1"]), st.integers(-3, 300)
        ),
        "arrays": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["x", "counts", "y"]),
                    "dtype": st.sampled_from(["float32", "int32", "object", "bool"]),
                    "shape": st.lists(st.integers(-1, 300), max_size=3),
                    "nbytes": st.integers(-1, 10**6),
                }
            ),
            max_size=2,
        ),
        "extra": _json_scalars,
    },
).map(lambda h: json.dumps(h).encode())


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(_headers | st.binary(max_size=40), min_size=1, max_size=3))
def test_fuzzed_frames_get_error_replies(fuzz_server, frames: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    _, sock = fuzz_server
    sock.send_multipart(frames)
    assert sock.poll(5000), "server did not answer"
    msg, _ = decode_reply(sock.recv_multipart(zmq.NOBLOCK))
    assert msg.kind == "error" or msg.kind == "hello_reply"


def test_server_still_serves_after_fuzzing(fuzz_server) -> None:  # type: ignore[no-untyped-def]
    srv, sock = fuzz_server
    for junk in ([b""], [b"\x00" * 1000], [b"{}", b"\x01"]):
        sock.send_multipart(junk)
        assert sock.poll(5000)
        assert decode_reply(sock.recv_multipart(zmq.NOBLOCK))[0].kind == "error"
    assert srv.proc is not None and srv.proc.poll() is None
    with RemoteDriver(srv.endpoint, timeout_s=5) as remote:
        assert remote.read_conductances(R).shape == (16, 16, 4)


def test_curve_right_key_served_wrong_key_refused(tmp_path: Path) -> None:
    auth, rogue = tmp_path / "auth", tmp_path / "rogue"
    for directory, name in ((auth, "server"), (auth, "alice"), (rogue, "mallory")):
        out = subprocess.run(
            [sys.executable, "-m", "hil", "keys", "generate", str(directory), "--name", name],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert "public key" in out.stdout
    log = tmp_path / "s.log"
    with ServeProcess(
        "sim://?preset=ideal", "tcp://127.0.0.1:*", ["--auth-keys", str(auth)], log_path=log
    ) as srv:
        url = f"{srv.endpoint}?server_key={auth}/server.key&timeout_s=5"
        from drivers import open_driver

        with open_driver(f"{url}&client_key={auth}/alice.key_secret") as alice:
            assert alice.info().chips == 2
        with pytest.raises(Unauthorised, match="refused this client's CURVE key"):
            RemoteDriver(
                srv.endpoint,
                server_key=auth / "server.key",
                client_key=rogue / "mallory.key_secret",
                timeout_s=5,
                retries=0,
            )
        with pytest.raises(Unauthorised, match="requires CURVE keys"):
            RemoteDriver(srv.endpoint, timeout_s=0.3, retries=0)
    assert "client_rejected" in log.read_text()
