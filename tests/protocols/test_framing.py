"""Framing: round trip for any whitelisted dtype/shape; malformed frames raise ProtocolError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocols import (
    MalformedMessage,
    ProtocolError,
    Region,
    VersionMismatchError,
    decode_reply,
    decode_request,
    encode,
)
from protocols.messages import (
    DTYPES,
    PROTOCOL_VERSION,
    ErrorReply,
    MvmReply,
    MvmRequest,
    PulseRequest,
)

R = Region(1, 0, 3, 2, 5)


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from(sorted(DTYPES)).map(np.dtype),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_round_trip_any_dtype_and_shape(arr: np.ndarray) -> None:
    frames = encode(MvmReply(request_id="r"), {"y": arr})
    msg, arrays = decode_reply(frames)
    assert isinstance(msg, MvmReply)
    out = arrays["y"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_big_endian_and_non_contiguous_arrays_are_normalised() -> None:
    a = np.arange(24, dtype=">f8").reshape(4, 6)[:, ::2]
    _, arrays = decode_reply(encode(MvmReply(request_id="r"), {"y": a}))
    np.testing.assert_array_equal(arrays["y"], a)


def test_unsupported_dtype_refused() -> None:
    with pytest.raises(MalformedMessage, match="complex128"):
        encode(MvmReply(request_id="r"), {"y": np.zeros(2, dtype=complex)})


def test_request_round_trip_keeps_fields() -> None:
    counts = np.ones((3, 3, 4), dtype=np.int32)
    mask = np.zeros((3, 3, 4), dtype=bool)
    msg, arrays = decode_request(
        encode(PulseRequest(request_id="p1", region=R), {"counts": counts, "reset_mask": mask})
    )
    assert msg.region == R and msg.request_id == "p1"
    assert set(arrays) == {"counts", "reset_mask"}


def _header(**over: object) -> bytes:
    frames = encode(MvmRequest(request_id="m", region=R), {"x": np.zeros((1, 3), np.float32)})
    obj = json.loads(frames[0])
    obj.update(over)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "empty"),
        ([b"\xff\xfe"], "UTF-8"),
        ([b"[1, 2]"], "JSON object"),
        (
            [json.dumps({"version": PROTOCOL_VERSION, "kind": "nope", "request_id": "x"}).encode()],
            "invalid",
        ),
        ([_header(extra_field=1), b"\0" * 12], "invalid"),
        ([_header()], "buffer frame"),
        ([_header(), b"\0" * 11], "frame has 11"),
        (
            [
                _header(arrays=[{"name": "x", "dtype": "float32", "shape": [1, 3], "nbytes": 8}]),
                b"\0" * 8,
            ],
            "needs 12",
        ),
        (
            [
                _header(arrays=[{"name": "x", "dtype": "object", "shape": [1], "nbytes": 8}]),
                b"\0" * 8,
            ],
            "invalid",
        ),
        (
            [
                _header(arrays=[]),
            ],
            "exactly one of",
        ),
        ([_header(request_id=""), b"\0" * 12], "invalid"),
        ([b"{" * 100_000], "exceeds"),
    ],
)
def test_malformed_frames_raise_protocol_error(frames: list[bytes], match: str) -> None:
    with pytest.raises(MalformedMessage, match=match):
        decode_request(frames)


def test_version_mismatch_is_its_own_error() -> None:
    other = PROTOCOL_VERSION + 1
    with pytest.raises(VersionMismatchError, match=f"version {other}"):
        decode_request([_header(version=other), b"\0" * 12])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_random_bytes_never_escape_as_other_errors(frames: list[bytes]) -> None:
    try:
        decode_request(frames)
    except ProtocolError:
        pass


def test_error_reply_codes_are_typed() -> None:
    msg, _ = decode_reply(encode(ErrorReply(request_id="-", code="lease_conflict", message="m")))
    assert msg.code == "lease_conflict"
    with pytest.raises(MalformedMessage):
        decode_reply(
            [
                json.dumps(
                    {
                        "version": PROTOCOL_VERSION,
                        "kind": "error",
                        "request_id": "-",
                        "code": "oops",
                        "message": "",
                    }
                ).encode()
            ]
        )


def test_region_model_rejects_empty_and_negative() -> None:
    for bad in [(0, 2, 2, 0, 1), (0, 0, 1, 3, 1), (-1, 0, 1, 0, 1)]:
        with pytest.raises(ValueError):
            Region(*bad)
    r = Region(0, 0, 4, 0, 4)
    assert r.overlaps(Region(0, 3, 5, 3, 5)) and not r.overlaps(Region(1, 0, 4, 0, 4))
    assert not r.overlaps(Region(0, 4, 5, 0, 4))


def test_device_info_json_is_deterministic() -> None:
    from protocols import DeviceInfo, Limits

    info = DeviceInfo(
        chips=2,
        rows=4,
        cols=4,
        g_min_us=0.1,
        g_max_us=10.0,
        set_step_mean_us=1.0,
        capabilities=frozenset({"time_control", "transpose_mvm", "snapshot"}),
        limits=Limits(max_pulses_per_device=5, max_batch=8, max_program_iterations=9),
        driver="x",
    )
    assert info.model_dump(mode="json")["capabilities"] == [
        "snapshot",
        "time_control",
        "transpose_mvm",
    ]
    assert DeviceInfo.model_validate_json(info.model_dump_json()) == info


def test_mvm_carries_exactly_one_of_x_and_x_code() -> None:
    x = np.zeros((1, 3), np.float32)
    codes = np.zeros((1, 3), np.int8)
    msg, arrays = decode_request(encode(MvmRequest(request_id="m", region=R), {"x_code": codes}))
    assert arrays["x_code"].dtype == np.int8
    for bad in ({}, {"x": x, "x_code": codes}):
        with pytest.raises(MalformedMessage, match="exactly one of"):
            encode(MvmRequest(request_id="m", region=R), bad)
    with pytest.raises(MalformedMessage, match="exactly one of"):
        encode(MvmReply(request_id="r"), {})
