"""MVMs as DAC/ADC codes on the wire (drivers/codes.py): bit-identical to the float path
on the simulator, 1 byte per input and output instead of 4, float devices keep floats."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from drivers import InvalidRequest
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from drivers.sim import SimDriver
from protocols import CAP_MVM_CODES, Region, encode
from protocols.messages import ErrorReply, MvmReply, MvmRequest
from tests.drivers.fakes import Sessions

REGION = Region(0, 0, 64, 0, 48)


@contextmanager
def _served(driver: SimDriver, tmp_path: Path) -> Iterator[str]:
    server = DeviceServer(driver, f"ipc://{tmp_path}/codes.sock")
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield server.bound[0]
    finally:
        server.stop()
        thread.join(5)


def _programmed(preset: str) -> SimDriver:
    d = SimDriver(preset, seed=4)
    w = np.random.default_rng(1).uniform(-4, 4, REGION.shape)
    d.program(REGION, w, tolerance_us=0.5, max_iterations=10)
    return d


@pytest.mark.parametrize("transpose", [False, True])
def test_codes_over_the_wire_equal_the_in_process_float_path(
    tmp_path: Path, rng: np.random.Generator, transpose: bool
) -> None:
    local, served = _programmed("hermes"), _programmed("hermes")
    assert local.info().has(CAP_MVM_CODES)
    n_in = REGION.shape[1] if transpose else REGION.shape[0]
    xs = [rng.uniform(-1, 1, (33, n_in)).astype(np.float32) for _ in range(3)]
    xs.append((rng.random((20, n_in)) < 0.2).astype(np.float32))
    with _served(served, tmp_path) as endpoint, RemoteDriver(endpoint, timeout_s=5) as remote:
        assert remote.info().has(CAP_MVM_CODES)
        for x in xs:
            sent0, recv0 = remote.link_bytes()[:2]
            y = remote.mvm(REGION, x, transpose=transpose)
            np.testing.assert_array_equal(y, local.mvm(REGION, x, transpose=transpose))
            assert y.dtype == np.float32 and np.abs(y).max() > 0
            sent, recv = remote.link_bytes()[:2]
            # 1 byte per input and per output (plus the JSON header)
            assert sent - sent0 < x.size + 600 and recv - recv0 < y.size + 600


def test_float_device_keeps_float_arrays_and_refuses_codes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    ideal = _programmed("ideal")
    assert not ideal.info().has(CAP_MVM_CODES) and ideal.mvm_codes(0) is None
    x = rng.uniform(-1, 1, (5, REGION.shape[0])).astype(np.float32)
    with _served(ideal, tmp_path) as endpoint, RemoteDriver(endpoint, timeout_s=5) as remote:
        sent0 = remote.link_bytes().sent
        np.testing.assert_allclose(remote.mvm(REGION, x), ideal.mvm(REGION, x), rtol=1e-6)
        assert remote.link_bytes().sent - sent0 > 4 * x.size
    server = DeviceServer(ideal, "inproc://unused")
    req = MvmRequest(request_id="c", region=REGION)
    msg, _ = Sessions(server).call(b"c1", encode(req, {"x_code": np.zeros((1, 64), np.int8)}))
    assert isinstance(msg, ErrorReply) and msg.code == "bad_request"
    assert "float periphery" in msg.message


def test_server_refuses_out_of_range_codes() -> None:
    server = DeviceServer(_programmed("hermes"), "inproc://unused")
    req = MvmRequest(request_id="c", region=REGION)
    bad = np.full((1, 64), -128, np.int8)
    client = Sessions(server)
    msg, _ = client.call(b"c1", encode(req, {"x_code": bad}))
    assert isinstance(msg, ErrorReply) and "below -127" in msg.message
    ok, arrays = client.call(b"c1", encode(req, {"x_code": bad + 1}))
    assert isinstance(ok, MvmReply) and arrays["y_code"].dtype == np.int8 and ok.y_lsb_us


def test_pulse_counts_travel_as_bytes(tmp_path: Path, rng: np.random.Generator) -> None:
    local, served = _programmed("hermes"), _programmed("hermes")
    counts = rng.integers(0, 3, (*REGION.shape, 4))
    with _served(served, tmp_path) as endpoint, RemoteDriver(endpoint, timeout_s=5) as remote:
        sent0 = remote.link_bytes().sent
        rep = remote.apply_pulses(REGION, counts, request_id="p1")
        assert remote.link_bytes().sent - sent0 < counts.size + 1000
        assert rep == local.apply_pulses(REGION, counts, request_id="p1")
        np.testing.assert_array_equal(
            served.true_conductances(REGION), local.true_conductances(REGION)
        )
    with pytest.raises(InvalidRequest):
        local.apply_pulses(REGION, counts[..., :2], request_id="p2")
