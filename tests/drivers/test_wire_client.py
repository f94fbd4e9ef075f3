"""The document is enough: tests/wire_client.py (pyzmq, json, numpy; written from
docs/protocol.md) runs every verb against a real ``hil serve`` with CURVE, and its results
equal ``RemoteDriver``'s bit for bit on a twin server of the same seed. The keys folder is
re-read while serving (by itself and on SIGHUP); the server's own key is no client."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from drivers.auth import generate_keypair
from drivers.remote import RemoteDriver
from protocols import Region
from tests.drivers.serve_proc import ServeProcess, wait_for
from tests.wire_client import VERSION, WireClient, WireError

URL = "sim://?preset=hermes&seed=11"
R = Region(0, 0, 16, 0, 12)
R2 = Region(1, 8, 20, 4, 14)


def _r(region: Region) -> dict[str, int]:
    return region.model_dump()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit: dtype, shape and bytes."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _reloads(log: Path) -> int:
    return sum('"auth_keys_reloaded"' in line for line in log.read_text().splitlines())


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    auth = tmp_path / "keys"
    for name in ("server", "alice"):
        generate_keypair(auth, name)
    return auth


def test_wire_client_equals_remote_driver_bit_for_bit(tmp_path: Path, keys: Path) -> None:
    extra = ["--auth-keys", str(keys)]
    with (
        ServeProcess(URL, "tcp://127.0.0.1:*", extra, log_path=tmp_path / "a.log") as a,
        ServeProcess(URL, "tcp://127.0.0.1:*", extra, log_path=tmp_path / "b.log") as b,
        WireClient(
            a.endpoint,
            server_key_file=keys / "server.key",
            client_key_file=keys / "alice.key_secret",
        ) as wire,  # fmt: skip
        RemoteDriver(
            b.endpoint,
            server_key=keys / "server.key",
            client_key=keys / "alice.key_secret",
            timeout_s=60,
        ) as remote,  # fmt: skip
    ):
        rng = np.random.default_rng(5)
        hello = wire.hello("wire")
        assert hello["client_id"] == remote.client_id == "key:alice"
        assert hello["session"] == "" and wire.session is None  # CURVE: no token
        info = wire.info()
        assert info == hello["info"]
        mine = {**info, "capabilities": sorted(set(info["capabilities"]) - {"snapshot"})}
        assert mine == remote.info().model_dump(mode="json")
        assert "mvm_codes" in info["capabilities"]

        # leases: a retried acquire is the same lease, and listed once
        acquire_id = "acquire-1"
        lease = wire.lease_acquire(_r(R), "write", request_id=acquire_id)
        assert wire.lease_acquire(_r(R), "write", request_id=acquire_id) == lease
        remote_lease = remote.acquire_lease(R, "write")
        assert lease["lease_id"] == remote_lease == "L1" and lease["ttl_s"] == 10.0
        (held,) = wire.leases()["leases"]
        assert held["lease_id"] == "L1" and held["request_id"] == acquire_id
        assert remote.leases()["leases"][0]["lease_id"] == "L1"

        # pulses (uint8 counts, as RemoteDriver sends them), retried once on the wire
        counts = rng.integers(0, 6, (*R.shape, 4)).astype(np.uint8)
        mask = rng.random((*R.shape, 4)) < 0.2
        report = wire.apply_pulses(_r(R), counts, mask, request_id="pulse-1")
        assert wire.apply_pulses(_r(R), counts, mask, request_id="pulse-1") == report
        assert report == remote.apply_pulses(R, counts, mask).model_dump()
        assert _same(wire.read_conductances(_r(R)), remote.read_conductances(R))

        # MVMs: codes, as RemoteDriver sends them to a mvm_codes device: bit for bit; and
        # floats in, floats out: the same values, but a -0.0 of the float path is +0.0
        # over codes (ADC code 0 has no sign; docs/protocol.md §6)
        for transpose, n_in in ((False, R.rows), (True, R.cols)):
            x = rng.uniform(-1, 1, (8, n_in)).astype(np.float32)
            y_wire = wire.mvm(_r(R), x, transpose=transpose, codes=True)
            assert _same(y_wire, remote.mvm(R, x, transpose=transpose))
            y_float = wire.mvm(_r(R), x, transpose=transpose, codes=False)
            y_remote = remote.mvm(R, x, transpose=transpose)
            assert _same(y_float + np.float32(0.0), y_remote)  # -0.0 + 0.0 is +0.0

        # program-and-verify on chip 1, net µS targets
        target = rng.uniform(-0.5, 0.5, R2.shape).astype(np.float32) * info["g_net_max_us"]
        report = wire.program(_r(R2), target, 0.5, 20, request_id="prog-1")
        assert (
            report == remote.program(R2, target, tolerance_us=0.5, max_iterations=20).model_dump()
        )
        assert _same(wire.read_conductances(_r(R2)), remote.read_conductances(R2))

        # the clock: drift moves both the same way
        assert wire.advance(3600.0, request_id="adv-1") == remote.advance(3600.0)
        assert wire.advance(3600.0, request_id="adv-1") == remote.time_s() == wire.time()
        x = rng.uniform(-1, 1, (4, R2.rows)).astype(np.float32)
        assert _same(wire.mvm(_r(R2), x, codes=True), remote.mvm(R2, x))
        assert wire.reset(_r(R), request_id="reset-1") == remote.reset(R).model_dump()
        assert _same(wire.read_conductances(_r(R)), remote.read_conductances(R))
        for got, want in zip(wire.wear(_r(R)), remote.wear(R), strict=True):
            assert _same(got, want) and got.dtype == np.int64

        # release twice with one id: the first reply; then nothing held
        first = wire.lease_release("L1", request_id="release-1")
        assert wire.lease_release("L1", request_id="release-1") == first
        remote.release_lease(remote_lease)
        assert wire.heartbeat() == 0 and wire.leases()["leases"] == [] == remote.leases()["leases"]

        # the audit trails match row for row (retries added no rows)
        def rows(trail: list[dict]) -> list[tuple]:  # type: ignore[type-arg]
            return [(r["verb"], r["chip"], r["row0"], r["col1"], r["pulses"], r["outcome"])
                    for r in trail]  # fmt: skip

        assert rows(wire.audit()) == rows(remote.audit())
        assert [r["verb"] for r in wire.audit(limit=2)] == ["lease_acquire", "apply_pulses"]
        status = wire.status()
        assert status["protocol"] == VERSION == remote.status()["protocol"]
        assert "key:alice" in {c["identity"] for c in status["clients"]}

        # errors name the request whenever its header parsed (§4, §8)
        for kind, fields, code in (
            ("time", {"surplus": 1}, "bad_request"),
            ("advance", {"dt_s": "1"}, "bad_request"),
            ("mvm", {"region": _r(R), "transpose": 0}, "bad_request"),
            ("reset", {"region": {**_r(R), "row1": 999}}, "bad_request"),
            ("advance", {"dt_s": 1e12}, "limit_exceeded"),
            ("lease_release", {"lease_id": "L1"}, "not_found"),
        ):
            with pytest.raises(WireError) as err:
                wire.call(kind, None, f"bad-{kind}", **fields)
            assert err.value.code == code and err.value.request_id == f"bad-{kind}"
        rid, frames = wire.frames("info", request_id="old")
        header = json.loads(frames[0])
        wire.send([json.dumps({**header, "version": VERSION - 1}).encode()])
        reply, _ = wire.receive("old")
        assert reply["code"] == "version_mismatch" and reply["request_id"] == "old"
        wire.send([frames[0], *([b"x"] * 5)])  # six frames: over the bound
        reply, _ = wire.receive(rid)
        assert reply["code"] == "limit_exceeded" and reply["request_id"] == "old"
        with pytest.raises(WireError, match="already used"):
            wire.reset(_r(R2), request_id="reset-1")
        assert wire.time() == remote.time_s()


def test_sessions_without_curve_over_ipc(tmp_path: Path) -> None:
    with (
        ServeProcess("sim://?preset=ideal", f"ipc://{tmp_path}/d.sock") as srv,
        WireClient(srv.endpoint) as wire,
        RemoteDriver(srv.endpoint, timeout_s=30) as remote,
    ):
        with pytest.raises(WireError) as err:
            wire.call("info", None, "no-session")
        assert err.value.code == "unauthorised" and err.value.request_id == "no-session"
        hello = wire.hello("labview")
        assert hello["client_id"].startswith("labview-") and len(hello["session"]) >= 32
        x = np.linspace(-1, 1, 2 * R.rows, dtype=np.float32).reshape(2, R.rows)
        wire.apply_pulses(_r(R), np.full((*R.shape, 4), 3, np.int32))
        assert _same(wire.mvm(_r(R), x), remote.mvm(R, x))  # the ideal chip has no noise
        assert _same(wire.read_conductances(_r(R)), remote.read_conductances(R))
        lease = wire.lease_acquire(_r(R), "read")
        assert [x["lease_id"] for x in wire.leases()["leases"]] == [lease["lease_id"]]
        assert remote.leases()["leases"] == []  # only the caller's own
        # a request whose reply was never read (the socket closed), re-sent from a new
        # socket with another routing id on the resumed session: applied once (§1, §7)
        r3 = {"chip": 1, "row0": 0, "row1": 4, "col0": 0, "col1": 4}
        counts = np.arange(64, dtype=np.uint8).reshape(4, 4, 4) % 7
        rid, frames = wire.frames("apply_pulses", {"counts": counts}, "once", region=r3)
        wire.send(frames)
        wire.close()
        with WireClient(srv.endpoint) as again:
            resumed = again.hello("other", session=hello["session"])
            assert resumed["client_id"] == hello["client_id"]
            again.send(frames)
            reply, _ = again.receive(rid)
            assert reply["kind"] == "apply_pulses_reply"
            assert reply["report"]["set_pulses"] == int(counts.sum())
            set_pulses, _ = again.wear(r3)
            assert _same(set_pulses, counts.astype(np.int64))  # applied once, not twice
            assert [r["request_id"] for r in again.audit(identity=hello["client_id"])].count(
                "once"
            ) == 1
            assert again.heartbeat() == 1  # the read lease of the first socket


def test_one_frame_over_the_bound_drops_the_connection_and_the_server_serves_on(
    tmp_path: Path,
) -> None:
    """§9: past ZMQ_MAXMSGSIZE no reply is possible; libzmq drops the connection."""
    with ServeProcess("sim://?preset=ideal", f"ipc://{tmp_path}/d.sock") as srv:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(srv.endpoint)
        try:
            header = {"version": VERSION, "kind": "info", "request_id": "big"}
            sock.send_multipart([json.dumps(header).encode(), bytes(64 * 2**20 + 1)])
            assert monitor.poll(60_000), "the server did not drop the connection"
            assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        finally:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)
        with WireClient(srv.endpoint) as wire:
            assert wire.hello()["info"]["chips"] == 2


def _refused(endpoint: str, keys: Path, secret: Path) -> bool:
    with WireClient(endpoint, server_key_file=keys / "server.key", client_key_file=secret) as c:
        return c.handshake() == "auth"


def _admitted(endpoint: str, keys: Path, secret: Path) -> bool:
    with WireClient(endpoint, server_key_file=keys / "server.key", client_key_file=secret) as c:
        return c.handshake() == "ok" and c.hello()["client_id"].startswith("key:")


def test_keys_are_reloaded_while_serving_and_the_server_key_is_no_client(
    tmp_path: Path, keys: Path
) -> None:
    log = tmp_path / "s.log"
    with ServeProcess(URL, "tcp://127.0.0.1:*", ["--auth-keys", str(keys)], log_path=log) as srv:
        assert _admitted(srv.endpoint, keys, keys / "alice.key_secret")
        assert _refused(srv.endpoint, keys, keys / "server.key_secret")
        # a key added while serving: the folder changed, the server re-reads it by itself
        before = _reloads(log)
        generate_keypair(keys, "carol")
        assert wait_for(lambda: _reloads(log) > before, timeout_s=30)
        assert _admitted(srv.endpoint, keys, keys / "carol.key_secret")
        # a key file rewritten in place (the folder's time may not move): SIGHUP
        other = tmp_path / "other"
        generate_keypair(other, "dave")
        assert _refused(srv.endpoint, keys, other / "dave.key_secret")
        (keys / "carol.key").write_text((other / "dave.key").read_text())
        before = _reloads(log)
        assert srv.proc is not None
        os.kill(srv.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: _reloads(log) > before, timeout_s=30)
        assert _admitted(srv.endpoint, keys, other / "dave.key_secret")
        assert _refused(srv.endpoint, keys, keys / "carol.key_secret")
        assert _refused(srv.endpoint, keys, keys / "server.key_secret")
        assert srv.proc.poll() is None  # SIGHUP did not stop it


def test_wire_client_imports_nothing_of_the_project() -> None:
    source = (Path(__file__).resolve().parents[1] / "wire_client.py").read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {"__future__", "json", "math", "uuid", "pathlib", "typing", "numpy", "zmq"}
    assert zmq.zmq_version_info() >= (4, 3)
