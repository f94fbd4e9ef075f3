"""Sparse pulse counts on the wire (protocol 3, #17): ``pulse_index`` (uint32 flat C-order
indices) + ``pulse_count`` (uint8) instead of the dense ``counts`` map when that is fewer
bytes. The server decodes them to the same dense counts, so the chips, the reports and the
wear ledger end identical; a malformed sparse request is a typed error and the server
serves on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers import InvalidRequest
from drivers.codes import dense_counts, sparse_counts
from drivers.remote import RemoteDriver
from drivers.server import DeviceServer
from drivers.sim import SimDriver
from protocols import MalformedMessage, Region, encode
from protocols.framing import decode_request
from protocols.messages import PulseRequest, WearRequest
from tests.drivers.fakes import FakeDriver, Sessions

R = Region(1, 8, 40, 16, 48)  # 32 x 32 cells x 4 devices = 4096 devices
SHAPE = (32, 32, 4)


def _few(rng: np.random.Generator, k: int = 50) -> np.ndarray:
    counts = np.zeros(SHAPE, np.int32)
    flat = counts.reshape(-1)
    flat[rng.choice(flat.size, k, replace=False)] = rng.integers(1, 4, k)
    return counts


def _sparse_frames(rid: str, region: Region, index: np.ndarray, count: np.ndarray) -> list:  # type: ignore[type-arg]
    return encode(
        PulseRequest(request_id=rid, region=region), {"pulse_index": index, "pulse_count": count}
    )


def test_sparse_form_round_trips_and_is_chosen_only_when_smaller() -> None:
    rng = np.random.default_rng(0)
    counts = _few(rng)
    sparse = sparse_counts(counts)
    assert sparse is not None
    index, count = sparse
    assert index.dtype == np.uint32 and count.dtype == np.uint8 and index.size == 50
    assert np.all(np.diff(index.astype(np.int64)) > 0) and count.min() >= 1
    np.testing.assert_array_equal(dense_counts(index, count, SHAPE), counts)
    assert dense_counts(index, count, SHAPE).dtype == np.uint8
    # a dense update (every device pulses) stays dense: 5 bytes each would be more than 1
    assert sparse_counts(np.ones(SHAPE, np.int32)) is None
    # nothing pulses: the empty sparse form
    empty = sparse_counts(np.zeros(SHAPE, np.int32))
    assert empty is not None and empty[0].size == 0
    assert not dense_counts(*empty, SHAPE).any()


def test_dense_and_sparse_requests_leave_the_same_chips_reports_and_wear() -> None:
    rng = np.random.default_rng(1)
    updates = [_few(rng, k) for k in (1, 30, 200, 0)]
    masks = [None, rng.random(SHAPE) < 0.01, None, None]
    servers = {
        form: DeviceServer(SimDriver("hermes", seed=3), "inproc://unused")
        for form in ("dense", "sparse")
    }
    try:
        clients = {form: Sessions(s) for form, s in servers.items()}
        for i, (counts, mask) in enumerate(zip(updates, masks, strict=True)):
            replies = {}
            for form, client in clients.items():
                sp = sparse_counts(counts)
                assert sp is not None
                arrays = (
                    {"counts": counts.astype(np.uint8)}
                    if form == "dense"
                    else {"pulse_index": sp[0], "pulse_count": sp[1]}
                )
                if mask is not None:
                    arrays["reset_mask"] = mask
                frames = encode(PulseRequest(request_id=f"p{i}", region=R), arrays)
                replies[form] = client.call(b"c", frames)[0]
            assert replies["dense"].kind == "apply_pulses_reply"
            assert replies["dense"].report == replies["sparse"].report
        dense_srv, sparse_srv = servers["dense"], servers["sparse"]
        whole = Region(1, 0, 256, 0, 256)
        np.testing.assert_array_equal(
            dense_srv.driver.chips[1].to_bytes(), sparse_srv.driver.chips[1].to_bytes()
        )
        wear = {
            form: client.call(b"c", encode(WearRequest(request_id="w", region=whole)))[1]
            for form, client in clients.items()
        }
        for name in ("set_pulses", "resets"):
            np.testing.assert_array_equal(wear["dense"][name], wear["sparse"][name])
        assert int(wear["sparse"]["set_pulses"].sum()) == sum(int(c.sum()) for c in updates)
    finally:
        for s in servers.values():
            s.driver.close()


BAD = {
    "out of range": (np.array([3, 48], np.uint32), np.array([1, 1], np.uint8), "out of range"),
    "repeated": (np.array([3, 3], np.uint32), np.array([1, 1], np.uint8), "strictly increasing"),
    "decreasing": (np.array([9, 3], np.uint32), np.array([1, 1], np.uint8), "strictly increasing"),
    "zero count": (np.array([3, 9], np.uint32), np.array([1, 0], np.uint8), ">= 1"),
    "int64 index": (np.array([3, 9], np.int64), np.array([1, 1], np.uint8), "uint32"),
    "uint16 count": (np.array([3, 9], np.uint32), np.array([1, 1], np.uint16), "uint8"),
    "lengths": (np.array([3, 9], np.uint32), np.array([1], np.uint8), "same length"),
    "2-D": (np.array([[3, 9]], np.uint32), np.array([[1, 1]], np.uint8), "1-D"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_sparse_requests_are_typed_errors_and_the_server_serves_on(case: str) -> None:
    drv = FakeDriver()
    server = DeviceServer(drv, "inproc://unused")
    client = Sessions(server)
    index, count, words = BAD[case]
    region = Region(0, 0, 4, 0, 3)  # 4 x 3 cells x 4 devices = 48: flat indices 0..47
    reply = client.call(b"c", _sparse_frames("bad", region, index, count))[0]
    assert reply.kind == "error" and reply.code == "bad_request" and reply.request_id == "bad"
    assert words in reply.message
    assert "apply_pulses" not in drv.hook_calls  # nothing applied
    # device (2, 1, 3) of (4, 3, 4): flat index 2*12 + 1*4 + 3 = 31, two pulses
    good = _sparse_frames("good", region, np.array([31], np.uint32), np.array([2], np.uint8))
    reply = client.call(b"c", good)[0]
    assert reply.kind == "apply_pulses_reply" and reply.report.set_pulses == 2
    assert drv.hook_calls.count("apply_pulses") == 1
    np.testing.assert_array_equal(
        dense_counts(np.array([31], np.uint32), np.array([2], np.uint8), (4, 3, 4)), _tiny()
    )


def _tiny() -> np.ndarray:
    counts = np.zeros((4, 3, 4), np.int32)
    counts[2, 1, 3] = 2
    return counts


def test_sparse_arrays_are_checked_by_the_framing() -> None:
    index, count = np.array([1], np.uint32), np.array([1], np.uint8)
    region = Region(0, 0, 4, 0, 3)
    assert decode_request(_raw(region, {"pulse_index": index, "pulse_count": count}))[1]
    # an index without its counts, and both forms at once, are refused before any decoding
    with pytest.raises(MalformedMessage, match="travel together"):
        decode_request(_raw(region, {"pulse_index": index}))
    with pytest.raises(MalformedMessage, match="exactly one"):
        decode_request(_raw(region, {"pulse_count": count}))
    both = {"counts": _tiny(), "pulse_index": index, "pulse_count": count}
    with pytest.raises(MalformedMessage, match="exactly one"):
        decode_request(_raw(region, both))
    with pytest.raises(MalformedMessage, match="exactly one"):
        decode_request(_raw(region, {}))
    with pytest.raises(MalformedMessage, match="travel together"):  # the encoder checks too
        encode(PulseRequest(request_id="a", region=region), {"pulse_index": index})


def _raw(region: Region, arrays: dict[str, np.ndarray]) -> list:  # type: ignore[type-arg]
    """Frames as a client that skips the encoder's own name check would send them."""
    import json

    from protocols.framing import _dtype_name

    specs = [
        {"name": k, "dtype": _dtype_name(a), "shape": list(a.shape), "nbytes": a.nbytes}
        for k, a in arrays.items()
    ]
    header = json.loads(PulseRequest(request_id="a", region=region).model_dump_json())
    header["arrays"] = specs
    return [json.dumps(header).encode(), *(a.tobytes() for a in arrays.values())]


def test_a_region_off_the_chip_is_refused_before_any_dense_map_is_made() -> None:
    server = DeviceServer(FakeDriver(), "inproc://unused")
    huge = Region(0, 0, 10**9, 0, 10**9)
    reply = Sessions(server).call(
        b"c", _sparse_frames("big", huge, np.array([1], np.uint32), np.array([1], np.uint8))
    )[0]
    assert reply.code == "bad_request" and reply.request_id == "big"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SimDriver, str]]:
    drv = SimDriver("hermes", seed=5)
    server = DeviceServer(drv, f"ipc://{tmp_path}/dev.sock")
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield drv, server.bound[0]
    server.stop()
    thread.join(5)
    drv.close()


def test_remote_driver_sends_few_pulses_sparse_with_the_in_process_result(
    served: tuple[SimDriver, str],
) -> None:
    drv, endpoint = served
    rng = np.random.default_rng(2)
    counts = _few(rng, 10)
    with SimDriver("hermes", seed=5) as local, RemoteDriver(endpoint, timeout_s=5) as remote:
        before = remote.link_bytes().sent
        rep = remote.apply_pulses(R, counts, request_id="few")
        sent = remote.link_bytes().sent - before
        assert sent < 1000 < counts.size  # 10 x 5 bytes + header, not 4096 dense bytes
        assert rep == local.apply_pulses(R, counts, request_id="few")
        np.testing.assert_array_equal(drv.chips[1].to_bytes(), local.chips[1].to_bytes())
        before = remote.link_bytes().sent
        remote.apply_pulses(R, np.ones(SHAPE, np.int32))  # every device: dense uint8
        assert remote.link_bytes().sent - before >= counts.size
    with pytest.raises(InvalidRequest, match="strictly increasing"):
        dense_counts(np.array([2, 1], np.uint32), np.array([1, 1], np.uint8), SHAPE)
